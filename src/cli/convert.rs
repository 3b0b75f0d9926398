//! `autoround-cpu convert`.

use super::args::ConvertArgs;

pub fn convert(_a: ConvertArgs) -> anyhow::Result<()> {
    anyhow::bail!("`convert` is not implemented yet")
}
