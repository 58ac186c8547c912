//! `constellation version`.

/// The CLI's version, e.g. `v0.1.0`.
pub fn cli_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

pub fn run() -> anyhow::Result<()> {
    println!("Version:   {} (constellation-rs)", cli_version());
    println!(
        "GitCommit: {}",
        option_env!("CONSTELLATION_GIT_COMMIT").unwrap_or("unknown")
    );
    println!("Rustc:     {}", env!("CONSTELLATION_RUSTC_VERSION"));
    println!("Target:    {}", env!("CONSTELLATION_TARGET"));
    println!(
        "Platform:  {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    Ok(())
}
