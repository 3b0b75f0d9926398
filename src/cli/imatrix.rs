//! `autoround-cpu imatrix`.

use super::args::ImatrixArgs;

pub fn imatrix(_a: ImatrixArgs) -> anyhow::Result<()> {
    anyhow::bail!("`imatrix` is not implemented yet")
}
