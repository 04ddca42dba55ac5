//! `TEST_LOG=1` turns on the server's log in a test binary, filtered by `RUST_LOG` (`info`
//! when unset). It goes through the test harness's capture, so `cargo test` shows the log
//! of a failing test only (`-- --nocapture` shows all of it). Off by default: a passing
//! run stays quiet.

/// Installs the logger once per binary when `TEST_LOG` is set to anything but `0`.
pub fn init() {
    let on = std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0");
    if on {
        // `try_init`: every test calls this, and only the first may install the logger.
        let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .is_test(true)
            .try_init();
    }
}
