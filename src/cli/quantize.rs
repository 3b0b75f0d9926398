//! `autoround-cpu quantize`.

use super::args::QuantizeArgs;

pub fn quantize(_a: QuantizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`quantize` is not implemented yet")
}
