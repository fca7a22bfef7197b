//! The replication connection's parsers fed bytes as a server (or damage) could send them:
//! arbitrary bytes never panic nor reserve without bound, and a stream cut or corrupted in
//! the middle of a message is an error, never a short message taken as whole.

use super::*;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

/// A backend message: tag, length (itself included), body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn xlog_data(start: u64, data: &[u8]) -> Vec<u8> {
    let mut b = vec![b'w'];
    for v in [start, start + data.len() as u64, 0] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(data);
    frame(b'd', &b)
}

/// A connection whose server side is `server` (in process, no network).
fn conn() -> (ReplConn, tokio::io::DuplexStream) {
    let (ours, server) = tokio::io::duplex(1 << 20);
    let c =
        ReplConn { stream: Box::pin(ours), buf: BytesMut::new(), server_version: String::new(), target: "test".into() };
    (c, server)
}

/// Take every whole message off `buf`, using each as the connection would.
fn drain(buf: &mut BytesMut) -> Result<(), String> {
    while let Some(m) = next_message(buf)? {
        match m {
            Message::CopyData(d) => {
                if let Some((kind, b)) = copy_kind(d) {
                    let _ = wal_event(kind, b.clone());
                    let _ = backup_event(kind, b);
                }
            }
            Message::ErrorResponse(e) => {
                let _ = (db_error(&e), sqlstate(&e));
            }
            Message::DataRow(r) => {
                let _ = row_text(&r);
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn removed_wal_is_recognised_in_any_language() {
    assert!(is_wal_removed("replication: le segment WAL demandé a déjà été supprimé (SQLSTATE 58P01)"));
    assert!(is_wal_removed("requested WAL segment 000000010000000000000003 has already been removed"));
    assert!(!is_wal_removed("replication: terminating connection due to administrator command (SQLSTATE 57P01)"));
}

#[test]
fn a_length_field_of_4_gib_is_refused_without_reserving_it() {
    for tag in [b'd', b'E', b'D', b'W'] {
        let mut buf = BytesMut::from(&[tag, 0xff, 0xff, 0xff, 0xff][..]);
        let e = next_message(&mut buf).map(|_| ()).expect_err("a 4 GiB message must be refused");
        assert!(e.contains("claims 4294967295 bytes"), "{e}");
        assert!(buf.capacity() < 1 << 20, "reserved {} bytes", buf.capacity());
    }
    // Within the bound, a message still waits for its bytes.
    let mut buf = BytesMut::from(&frame(b'd', &[b'w'; 1000])[..100]);
    assert!(next_message(&mut buf).unwrap().is_none());
}

#[test]
fn short_replication_messages_are_errors() {
    for kind in [b'w', b'k'] {
        let e = wal_event(kind, Bytes::from_static(&[0; 10])).unwrap_err();
        assert!(e.contains("cut short"), "{e}");
    }
    assert!(backup_event(b'p', Bytes::from_static(&[1, 2])).is_err());
    assert!(matches!(backup_event(b'd', Bytes::new()), Ok(BackupEvent::Data(d)) if d.is_empty()));
    // An archive name is used in an object name: only base.tar and OID.tar.
    for bad in [&b"../../tidewal.json\0\0"[..], b"base.tar/x\0\0", b"\0\0", b"16384.tar.gz\0/t\0"] {
        assert!(backup_event(b'n', Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
    }
    assert!(matches!(backup_event(b'n', Bytes::from_static(b"16384.tar\0/srv/ts\0")),
        Ok(BackupEvent::Archive { name, tablespace: Some(t) }) if name == "16384.tar" && t == "/srv/ts"));
}

#[tokio::test]
async fn a_wal_stream_cut_mid_message_is_an_error() {
    let (mut c, mut server) = conn();
    let mut bytes = xlog_data(0x0100_0000, &[7; 100]);
    let cut = xlog_data(0x0100_0064, &[8; 1000]);
    bytes.extend_from_slice(&cut[..cut.len() / 2]);
    server.write_all(&bytes).await.unwrap();
    drop(server);
    match c.next_wal_event().await.unwrap() {
        WalEvent::Data { start, data } => assert_eq!((start, &data[..]), (Lsn(0x0100_0000), &[7u8; 100][..])),
        e => panic!("{e:?}"),
    }
    let e = c.next_wal_event().await.unwrap_err();
    assert!(e.contains("closed the connection"), "{e}");
}

#[tokio::test]
async fn a_corrupted_wal_stream_is_an_error() {
    // XLogData whose header is cut inside the message itself.
    let (mut c, mut server) = conn();
    server.write_all(&frame(b'd', b"w\x00\x00\x00\x00\x01")).await.unwrap();
    assert!(c.next_wal_event().await.unwrap_err().contains("cut short"));
    // A length field below its own size, and one of 4 GiB.
    let (mut c, mut server) = conn();
    server.write_all(&[b'd', 0, 0, 0, 2, b'w']).await.unwrap();
    assert!(c.next_wal_event().await.unwrap_err().contains("protocol error"));
    let (mut c, mut server) = conn();
    server.write_all(&[b'd', 0xff, 0xff, 0xff, 0xf0, b'w', 0, 0]).await.unwrap();
    let e = c.next_wal_event().await.unwrap_err();
    assert!(e.contains("protocol error") && e.contains("claims"), "{e}");
    assert!(c.buf.capacity() < 1 << 20);
    // A type the protocol does not have.
    let (mut c, mut server) = conn();
    server.write_all(&frame(b'd', b"zgarbage")).await.unwrap();
    assert!(c.next_wal_event().await.unwrap_err().contains("unexpected replication message type"));
}

#[tokio::test]
async fn a_base_backup_stream_cut_mid_message_is_an_error() {
    let (mut c, mut server) = conn();
    let mut bytes = frame(b'd', b"nbase.tar\0\0");
    bytes.extend(frame(b'd', b"dsome tar bytes"));
    let cut = frame(b'd', &[b'd'; 5000]);
    bytes.extend_from_slice(&cut[..2000]);
    server.write_all(&bytes).await.unwrap();
    drop(server);
    match c.next_backup_event().await.unwrap() {
        Some(BackupEvent::Archive { name, tablespace: None }) => assert_eq!(name, "base.tar"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(c.next_backup_event().await.unwrap(), Some(BackupEvent::Data(d)) if &d[..] == b"some tar bytes"));
    let e = c.next_backup_event().await.unwrap_err();
    assert!(e.contains("closed the connection"), "{e}");
    // Damage in a message's type byte.
    let (mut c, mut server) = conn();
    server.write_all(&frame(b'd', b"\xffjunk")).await.unwrap();
    assert!(c.next_backup_event().await.unwrap_err().contains("unexpected BASE_BACKUP message type"));
}

/// Message tags a server sends, so that arbitrary bodies reach the bodies' parsers.
const TAGS: &[u8] = b"dcWHGCDEINKSZTRnst123AV";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Arbitrary bytes, in arbitrary pieces: an error or more to read, never a panic, and
    /// never more reserved than the bound on one message.
    #[test]
    fn any_bytes_are_parsed_without_panic_or_unbounded_reservation(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        pieces in prop::collection::vec(1usize..512, 1..16),
    ) {
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        for p in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*p).min(rest.len()));
            buf.extend_from_slice(now);
            rest = later;
            if drain(&mut buf).is_err() {
                break;
            }
            prop_assert!(buf.capacity() <= MAX_MESSAGE + 5 + bytes.len());
        }
    }

    /// Well-framed messages with arbitrary bodies reach every body parser.
    #[test]
    fn framed_messages_with_any_body_never_panic(
        msgs in prop::collection::vec((prop::sample::select(TAGS), prop::collection::vec(any::<u8>(), 0..300)), 1..8),
    ) {
        let mut buf = BytesMut::new();
        for (tag, body) in &msgs {
            buf.extend_from_slice(&frame(*tag, body));
        }
        let _ = drain(&mut buf);
    }

    #[test]
    fn copy_data_of_any_kind_and_body_is_decoded_or_refused(kind in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let b = Bytes::from(body);
        match wal_event(kind, b.clone()) {
            Ok(WalEvent::Data { data, .. }) => prop_assert_eq!(data.len() + 24, b.len()),
            Ok(_) => prop_assert_eq!(kind, b'k'),
            Err(_) => prop_assert!(!(kind == b'w' && b.len() >= 24 || kind == b'k' && b.len() >= 17)),
        }
        if let Ok(BackupEvent::Archive { name, .. }) = backup_event(kind, b) {
            let oid = name.strip_suffix(".tar").unwrap();
            prop_assert!(oid == "base" || oid.parse::<u32>().is_ok(), "{name:?}");
        }
    }
}
