//! Log lines on stderr in the LocalStack runtime's layout, so that `docker logs` reads as one
//! stream. Owns the format and the level filter; what is logged is up to each module.
//!
//! The HTTP and TLS crates are capped at debug: their trace output can contain request bytes,
//! and a request body carries the credential.

use std::io::Write;

use log::LevelFilter;

/// Installs the logger. Called once, after the configuration has chosen the level.
pub fn init(level: LevelFilter) {
    let library_level = level.min(LevelFilter::Debug);
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(LevelFilter::Off)
        .filter_module("lsinit", level)
        .filter_module("ureq", library_level)
        .filter_module("ureq_proto", library_level)
        .filter_module("rustls", library_level)
        .target(env_logger::Target::Stderr)
        .format(|out, record| {
            writeln!(
                out,
                "{}  {:>5} --- [{:>12}] {:<26} : {}",
                timestamp(),
                record.level(),
                "lsinit",
                logger_name(record.target()),
                record.args()
            )
        });
    // A second initialisation can only happen in tests; the first logger stays.
    let _ = builder.try_init();
}

/// `lsinit::licensing::client` → `lsinit.licensing`: one logger per top-level module.
fn logger_name(target: &str) -> String {
    let mut parts = target.split("::");
    match (parts.next(), parts.next()) {
        (Some("lsinit"), Some(module)) => format!("lsinit.{module}"),
        (Some(krate), _) => krate.to_string(),
        _ => "lsinit".to_string(),
    }
}

/// UTC wall-clock time with milliseconds, e.g. `2026-12-04T15:35:23.216`.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_name_keeps_the_top_level_module() {
        assert_eq!(logger_name("lsinit::licensing::client"), "lsinit.licensing");
        assert_eq!(logger_name("lsinit::supervision"), "lsinit.supervision");
        assert_eq!(logger_name("lsinit"), "lsinit");
        assert_eq!(logger_name("ureq::unversioned"), "ureq");
    }

    #[test]
    fn timestamp_has_millisecond_precision() {
        let stamp = timestamp();
        assert_eq!(stamp.len(), "2026-12-04T15:35:23.216".len(), "{stamp}");
        assert_eq!(&stamp[10..11], "T");
        assert_eq!(&stamp[19..20], ".");
    }
}
