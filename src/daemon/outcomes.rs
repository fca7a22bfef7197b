//! `tidewal_last_verify_*` and `tidewal_last_restore_test_*`: read at each scrape from the
//! files `ops::last_run` keeps, so runs by a systemd timer or a person count too. Nothing is
//! exported before the first run (the alert rules use `absent()` for that).

use super::Shared;
use crate::ops::last_run::{self, Kind, LastRun};

pub fn export(shared: &Shared) {
    if let Some(v) = last(shared, Kind::Verify) {
        metrics::gauge!("tidewal_last_verify_timestamp_seconds").set(v.finished);
        metrics::gauge!("tidewal_last_verify_problems").set(v.problems as f64);
        metrics::gauge!("tidewal_last_verify_duration_seconds").set(v.duration_seconds);
    }
    if let Some(r) = last(shared, Kind::RestoreTest) {
        metrics::gauge!("tidewal_last_restore_test_timestamp_seconds").set(r.finished);
        metrics::gauge!("tidewal_last_restore_test_success").set(if r.success { 1.0 } else { 0.0 });
        metrics::gauge!("tidewal_last_restore_test_duration_seconds").set(r.duration_seconds);
        if let Some(t) = r.last_success {
            metrics::gauge!("tidewal_last_successful_restore_test_timestamp_seconds").set(t);
        }
    }
}

pub fn last(shared: &Shared, kind: Kind) -> Option<LastRun> {
    last_run::read(&file(shared, kind))
}

pub fn file(shared: &Shared, kind: Kind) -> std::path::PathBuf {
    let repo = &shared.repo;
    last_run::path(&shared.settings.daemon.spool, kind, repo.store.url(), &repo.identity.system_identifier)
}

pub fn describe() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!(
        "tidewal_last_verify_timestamp_seconds",
        Unit::Seconds,
        "When the last tidewal verify finished (Unix time)"
    );
    describe_gauge!("tidewal_last_verify_problems", "Problems the last tidewal verify found (0 when clean)");
    describe_gauge!("tidewal_last_verify_duration_seconds", Unit::Seconds, "How long the last tidewal verify took");
    describe_gauge!(
        "tidewal_last_restore_test_timestamp_seconds",
        Unit::Seconds,
        "When the last restore test finished (Unix time)"
    );
    describe_gauge!("tidewal_last_restore_test_success", "1 when the last restore test passed, 0 when it failed");
    describe_gauge!("tidewal_last_restore_test_duration_seconds", Unit::Seconds, "How long the last restore test took");
    describe_gauge!(
        "tidewal_last_successful_restore_test_timestamp_seconds",
        Unit::Seconds,
        "When the newest passing restore test finished (Unix time)"
    );
}
