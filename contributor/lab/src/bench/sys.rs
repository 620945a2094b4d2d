//! Process memory figures from /proc (Linux): peak RSS, and resetting it between phases.

/// Peak resident set size of this process in MiB (`VmHWM`), if /proc is readable.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0: write 5 to /proc/self/clear_refs).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
