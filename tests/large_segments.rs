//! Clusters made with `initdb --wal-segsize` above 32 MiB: segments are streamed through a
//! multipart upload instead of being held in memory, on both kinds of repository.

mod common;

use common::*;

fn large_segments(label: &str, kind: RepoKind) {
    let a = Archiving::start_with(label, kind, &["--wal-segsize=64"]);
    let c = &a.cluster;
    assert_eq!(c.psql("SHOW wal_segment_size"), "64MB");
    c.psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g");
    let first = c.switch_wal();
    c.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g");
    let second = c.switch_wal();
    c.wait_archived(&second);
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", c.log());
    assert!(c.log().contains("streamed"), "the large-segment path was not used:\n{}", c.log());
    for seg in [&first, &second] {
        let wal = c.data.join("pg_wal").join(seg);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 64 << 20);
        assert_fetches_identical(&a.env, seg, &wal);
        // A second push of the same segment is recognised as identical.
        expect_exit(&a.env.tidewal(&["wal-push", wal.to_str().unwrap()]), 0, &["identical content"]);
    }
}

#[test]
fn large_segments_file_repository() {
    large_segments("large-file", RepoKind::File);
}

#[test]
fn large_segments_s3_repository() {
    large_segments("large-s3", RepoKind::S3);
}
