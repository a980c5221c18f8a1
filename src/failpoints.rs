//! Named failpoints: places in the act paths of the coordinator and the sidecar where a
//! crash would leave half a change behind. A test arms one by name, the process kills
//! itself there (SIGKILL, as a crash or an OOM kill would: no destructor runs, nothing is
//! flushed), the test starts it again and checks that the durable record carries the
//! decision on.
//!
//! Compiled in only with the `failpoints` feature (test builds turn it on through a
//! dev-dependency; release and `cargo build` binaries have none: [`hit`] is then empty).
//!
//! Arming, in the environment of the process to crash:
//! - `FAILPOINTS=<name>=return[;<name>=return...]` (the `fail` crate's syntax);
//! - `ETCDOP_FAILPOINTS_DIR=<dir>`: a failpoint that fires writes `<dir>/<name>` first and
//!   never fires again while that file exists, so a process started again after the crash
//!   (with the same environment, as a restarted sidecar inherits its coordinator's) goes
//!   on past it; the file also proves to the test that the failpoint was reached.
//!
//! Every name used with [`failpoint!`](crate::failpoint) is listed by the crash suite
//! (`coordinator/tests/failpoints.rs`), which fails on a name it has no case for.

/// Crashes the process here when the failpoint `$name` is armed (see the module doc).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoints::hit($name)
    };
}

/// The environment variable naming the directory of the markers of failpoints that fired.
pub const MARKER_DIR_ENV: &str = "ETCDOP_FAILPOINTS_DIR";

/// Whether failpoints are compiled into this build.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Arms the failpoints named in `FAILPOINTS`; call once at the start of `main`. Does
/// nothing in a build without failpoints.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        // Configured for the life of the process: the scenario is never torn down.
        std::mem::forget(fail::FailScenario::setup());
    }
}

/// The failpoint `name`: kills the process when armed and not fired before.
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    if fail::eval(name, |_| ()).is_none() {
        return;
    }
    if let Some(dir) = std::env::var_os(MARKER_DIR_ENV) {
        let marker = std::path::Path::new(&dir).join(name);
        if marker.exists() {
            return;
        }
        if let Err(e) = crate::durable::write_atomic(&marker, name.as_bytes()) {
            eprintln!(
                "failpoint {name}: cannot write its marker {}: {e}",
                marker.display()
            );
        }
    }
    eprintln!("failpoint {name} reached: the process kills itself");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should it ever return, end the process all the same.
    std::process::abort();
}

/// The failpoint `name`: nothing, in a build without failpoints.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Whether the failpoint `name` fired (its marker is in `dir`).
pub fn fired(dir: &std::path::Path, name: &str) -> bool {
    dir.join(name).exists()
}
