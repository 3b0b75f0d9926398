//! `autoround-cpu doctor`: what this CPU offers and what the engine would use.

use super::args::DoctorArgs;
use autoround_kernels::dispatch::{prefill_for, tier_for, tier_for_groupwise, Features};
use autoround_kernels::{reference, GgmlType};

pub fn doctor(a: DoctorArgs) -> anyhow::Result<()> {
    let threads = super::init_threads(a.threads)?;
    let f = Features::get();
    println!("autoround-cpu {}", env!("CARGO_PKG_VERSION"));
    println!("arch:     {}", std::env::consts::ARCH);
    let have: Vec<&str> = f.list().into_iter().filter(|x| x.1).map(|x| x.0).collect();
    let lack: Vec<&str> = f.list().into_iter().filter(|x| !x.1).map(|x| x.0).collect();
    println!(
        "features: {}",
        if have.is_empty() {
            "(none of interest)".into()
        } else {
            have.join(" ")
        }
    );
    println!("missing:  {}", lack.join(" "));
    println!(
        "threads:  {threads} (cores available: {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("\n{:<8} {:<10} {:<42} prefill", "type", "vec-dot", "decode");
    for &t in GgmlType::ALL {
        if reference::can_dequantize(t) && t != GgmlType::Q8_K && t != GgmlType::Q8_1 {
            println!(
                "{:<8} {:<10} {:<42} {}",
                t.to_string(),
                reference::vec_dot_type(t).to_string(),
                tier_for(t),
                prefill_for(t)
            );
        }
    }
    // group-wise INT2/3/4/8 (auto_round, GPTQ, AWQ checkpoints), repacked at load
    println!(
        "{:<8} {:<10} {:<42} {}",
        "INT2-8",
        "q8_0+sums",
        tier_for_groupwise(),
        prefill_for(GgmlType::F32)
    );
    Ok(())
}
