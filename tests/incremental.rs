//! Incremental backups, from the protocol up: a PostgreSQL 17 server with `summarize_wal`
//! sends only changed blocks once it has the parent's manifest, as files that
//! `pg/incremental.rs` reads and rebuilds; a server without summaries refuses clearly.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use common::pgver::major_bin;
use common::*;
use tidewal::pg::incremental::{self, Geometry, Older, Source};
use tidewal::pg::replication::{BackupEvent, ReplConn};

/// One BASE_BACKUP's `base.tar` as name → bytes, and its manifest.
async fn base_backup(c: &Cluster, manifest: Option<&[u8]>) -> Result<(BTreeMap<String, Vec<u8>>, Vec<u8>), String> {
    let info = format!("host={} port={} user={PG_USER}", c.sock.display(), c.port);
    let mut conn = ReplConn::connect(&tidewal::pg::sql::resolve_config(Some(&info), true).unwrap()).await.unwrap();
    if let Some(m) = manifest {
        conn.upload_manifest(m).await?;
    }
    conn.start_base_backup("incremental test", true, "CRC32C", manifest.is_some()).await?;
    let (mut tar, mut out_manifest, mut in_manifest, mut archive) = (Vec::new(), Vec::new(), false, String::new());
    while let Some(ev) = conn.next_backup_event().await? {
        match ev {
            BackupEvent::Archive { name, .. } => archive = name,
            BackupEvent::Manifest => in_manifest = true,
            BackupEvent::Data(d) if in_manifest => out_manifest.extend_from_slice(&d),
            BackupEvent::Data(d) if archive == "base.tar" => tar.extend_from_slice(&d),
            _ => {}
        }
    }
    conn.finish_base_backup().await?;
    let mut files = BTreeMap::new();
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            files.insert(name, bytes);
        }
    }
    Ok((files, out_manifest))
}

/// `path` rebuilt from the newest backup's incremental copy and the full one before it.
fn rebuild(path: &str, newest: &[u8], full: &[u8]) -> Vec<u8> {
    let g = Geometry::default();
    let h = incremental::parse_header(path, newest, newest.len() as u64, g).unwrap();
    let runs = incremental::plan(path, &h, &[Older::Full { size: full.len() as u64 }], g).unwrap();
    let mut out = Vec::new();
    for r in runs {
        let n = (r.blocks.end - r.blocks.start) as usize * g.block_size as usize;
        match r.from {
            Source::Zeros => out.resize(out.len() + n, 0),
            Source::Copy { copy, offset } => {
                let src = if copy == 0 { newest } else { full };
                out.extend_from_slice(&src[offset as usize..offset as usize + n]);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_wal_summaries_sends_changed_blocks_that_rebuild_the_files() {
    let env = TestEnv::new("incr17");
    let mut c =
        Cluster::init_from(&major_bin(17), &env.pg_dir("primary"), &[], "summarize_wal = on\nautovacuum = off\n");
    c.start();
    c.psql("CREATE TABLE cold AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 40000) g");
    c.psql("CREATE TABLE hot AS SELECT g AS id, 0 AS n FROM generate_series(1, 40000) g");
    c.psql("CHECKPOINT");
    let (full, manifest) = base_backup(&c, None).await.unwrap();
    assert!(!full.keys().any(|n| n.contains("INCREMENTAL.")), "a full backup has no incremental files");

    c.psql("UPDATE hot SET n = 1 WHERE id % 1000 = 0");
    c.psql("CREATE TABLE fresh AS SELECT g FROM generate_series(1, 1000) g");
    c.psql("CHECKPOINT");
    let hot = c.psql("SELECT pg_relation_filepath('hot')");
    let cold = c.psql("SELECT pg_relation_filepath('cold')");
    let fresh = c.psql("SELECT pg_relation_filepath('fresh')");
    let (incr, incr_manifest) = base_backup(&c, Some(&manifest)).await.unwrap();
    assert!(String::from_utf8_lossy(&incr_manifest).contains("INCREMENTAL."), "the manifest names incremental files");

    let name = |p: &str| {
        let (dir, file) = p.rsplit_once('/').unwrap();
        format!("{dir}/{}{file}", incremental::PREFIX)
    };
    // A table created since the parent comes whole; the others as incremental files.
    assert!(incr.contains_key(&fresh), "{fresh} in full");
    assert!(!incr.contains_key(&hot) && !incr.contains_key(&cold));
    let g = Geometry::default();
    let cold_h = incremental::parse_header(&cold, &incr[&name(&cold)], incr[&name(&cold)].len() as u64, g).unwrap();
    assert!(cold_h.blocks.is_empty(), "no block of the cold table changed: {:?}", cold_h.blocks);
    let hot_h = incremental::parse_header(&hot, &incr[&name(&hot)], incr[&name(&hot)].len() as u64, g).unwrap();
    assert!(!hot_h.blocks.is_empty() && hot_h.blocks.len() * 2 < full[&hot].len() / 8192, "{:?}", hot_h.blocks);
    // Every incremental file in the archive is well formed, and the archive is small.
    for (n, bytes) in incr.iter().filter(|(n, _)| n.contains(incremental::PREFIX)) {
        incremental::parse_header(n, bytes, bytes.len() as u64, g).unwrap();
    }
    let size = |m: &BTreeMap<String, Vec<u8>>| m.values().map(Vec::len).sum::<usize>();
    assert!(size(&incr) * 4 < size(&full), "incremental {} bytes, full {}", size(&incr), size(&full));

    // The files the server has now, rebuilt from the chain: the changed blocks are the new
    // ones (hint bits aside, the server's copy of an unchanged block is the full backup's).
    let rebuilt_cold = rebuild(&cold, &incr[&name(&cold)], &full[&cold]);
    assert_eq!(rebuilt_cold, full[&cold], "an unchanged table rebuilds as it was");
    let rebuilt_hot = rebuild(&hot, &incr[&name(&hot)], &full[&hot]);
    assert_eq!(rebuilt_hot.len(), full[&hot].len());
    let on_disk = std::fs::read(c.data.join(&hot)).unwrap();
    for &b in &hot_h.blocks {
        let r = b as usize * 8192..(b as usize + 1) * 8192;
        assert_eq!(rebuilt_hot[r.clone()], on_disk[r], "block {b} of {hot} is the server's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wal_summaries_the_server_refuses_an_incremental_backup() {
    let env = TestEnv::new("incr17off");
    let mut c = Cluster::init_from(&major_bin(17), &env.pg_dir("primary"), &[], "");
    c.start();
    let (_, manifest) = base_backup(&c, None).await.unwrap();
    let e = base_backup(&c, Some(&manifest)).await.unwrap_err();
    assert!(e.contains("WAL summarization"), "{e}");
}
