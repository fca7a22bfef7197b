//! A replication-protocol connection (`replication=true`), which tokio-postgres cannot open:
//! startup, authentication (trust, cleartext, md5, SCRAM-SHA-256), and the simple-query
//! commands of the streaming replication protocol (IDENTIFY_SYSTEM, TIMELINE_HISTORY).
//! Connection settings (and TLS) come from the same libpq-style `ConnConfig` as SQL connections.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Config;

use super::conninfo::ConnConfig;
use super::lsn::Lsn;
use super::tls::{self, BoxStream};

pub struct ReplConn {
    stream: BoxStream,
    buf: BytesMut,
    pub server_version: String,
    target: String,
}

/// What BASE_BACKUP reports before its data: where the backup starts.
#[derive(Clone, Debug)]
pub struct BackupStart {
    pub start_lsn: Lsn,
    pub timeline: u32,
    /// (oid, location) of every tablespace other than the main data directory.
    pub tablespaces: Vec<(u32, String)>,
    /// The server's estimate of the whole backup's size.
    pub estimated_bytes: u64,
}

/// One piece of the BASE_BACKUP copy stream (PostgreSQL 15 and later).
#[derive(Debug)]
pub enum BackupEvent {
    /// A new tar archive starts: `base.tar` or `<oid>.tar`.
    Archive {
        name: String,
        tablespace: Option<String>,
    },
    Data(Bytes),
    Progress(u64),
    /// The backup manifest follows as `Data`.
    Manifest,
}

/// One message of a physical replication stream.
#[derive(Debug)]
pub enum WalEvent {
    Data {
        start: Lsn,
        data: Bytes,
    },
    Keepalive {
        end: Lsn,
        reply: bool,
    },
    /// The server ended the stream (the timeline being streamed ended): call
    /// [`ReplConn::end_of_timeline`] for the one that follows.
    EndOfStream,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// IDENTIFY_SYSTEM's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemIdent {
    pub system_identifier: u64,
    pub timeline: u32,
    pub xlogpos: Lsn,
}

/// The SQLSTATE of an error (`C` field).
fn sqlstate(body: &postgres_protocol::message::backend::ErrorResponseBody) -> String {
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'C' {
            return String::from_utf8_lossy(f.value_bytes()).into_owned();
        }
    }
    String::new()
}

/// Whether a replication error says the WAL asked for is gone from the server: walsender
/// reports "requested WAL segment ... has already been removed" as `undefined_file`
/// (58P01), whatever language its messages are in.
pub fn is_wal_removed(message: &str) -> bool {
    message.contains("(SQLSTATE 58P01)") || message.contains("has already been removed")
}

fn db_error(body: &postgres_protocol::message::backend::ErrorResponseBody) -> String {
    let mut fields = body.fields();
    let (mut msg, mut detail, mut hint) = (String::new(), None, None);
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'M' => msg = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'D' => detail = Some(String::from_utf8_lossy(f.value_bytes()).into_owned()),
            b'H' => hint = Some(String::from_utf8_lossy(f.value_bytes()).into_owned()),
            _ => {}
        }
    }
    for extra in [detail, hint].into_iter().flatten() {
        msg.push_str(" (");
        msg.push_str(&extra);
        msg.push(')');
    }
    msg
}

impl ReplConn {
    /// Open a physical replication connection (over TLS as `sslmode` says).
    pub async fn connect(cfg: &ConnConfig) -> Result<ReplConn, String> {
        tls::connect(cfg, |stream, target| async move {
            let mut conn =
                ReplConn { stream, buf: BytesMut::with_capacity(64 * 1024), server_version: String::new(), target };
            conn.startup(&cfg.pg).await?;
            Ok(conn)
        })
        .await
    }

    async fn send(&mut self, msg: BytesMut) -> Result<(), String> {
        self.stream.write_all(&msg).await.map_err(|e| format!("{}: {e}", self.target))?;
        self.stream.flush().await.map_err(|e| format!("{}: {e}", self.target))
    }

    /// The next backend message (notices are logged and skipped; warnings, such as a page
    /// failing its checksum during BASE_BACKUP, as warnings).
    async fn recv(&mut self) -> Result<Message, String> {
        loop {
            match next_message(&mut self.buf).map_err(|e| format!("protocol error from {}: {e}", self.target))? {
                Some(Message::NoticeResponse(n)) => {
                    let (mut warning, mut text) = (false, String::new());
                    let mut f = n.fields();
                    while let Ok(Some(field)) = f.next() {
                        match field.type_() {
                            b'V' => warning = field.value_bytes() == b"WARNING",
                            b'M' => text = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                            _ => {}
                        }
                    }
                    if warning {
                        tracing::warn!("server warning: {text}");
                    } else {
                        tracing::info!("server notice: {text}");
                    }
                }
                Some(m) => return Ok(m),
                None => self.fill().await?,
            }
        }
    }

    /// Read more from the server into the buffer.
    async fn fill(&mut self) -> Result<(), String> {
        // Keep reads large: parsed messages are split off the front of the buffer.
        self.buf.reserve(256 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| format!("{}: {e}", self.target))?;
        if n == 0 {
            return Err(format!("the server at {} closed the connection", self.target));
        }
        Ok(())
    }

    async fn startup(&mut self, cfg: &Config) -> Result<(), String> {
        let user = cfg.get_user().ok_or("no user name (set user= or PGUSER)")?.to_string();
        let app = cfg.get_application_name().unwrap_or("tidewal").to_string();
        let mut msg = BytesMut::new();
        let params = [("user", user.as_str()), ("replication", "true"), ("application_name", app.as_str())];
        frontend::startup_message(params.iter().copied(), &mut msg).map_err(|e| e.to_string())?;
        self.send(msg).await?;
        let password = || {
            cfg.get_password().map(|p| p.to_vec()).ok_or_else(|| {
                format!("the server asks for a password for user {user}: set password= in the conninfo, PGPASSWORD or ~/.pgpass")
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match self.recv().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password()?, &mut out).map_err(|e| e.to_string())?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let hash = md5_hash(user.as_bytes(), &password()?, b.salt());
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| e.to_string())?;
                }
                Message::AuthenticationSasl(b) => {
                    let mut mechs = b.mechanisms();
                    let mut ok = false;
                    while let Ok(Some(m)) = mechs.next() {
                        ok |= m == SCRAM_SHA_256;
                    }
                    if !ok {
                        return Err("the server offers no SASL mechanism tidewal supports (SCRAM-SHA-256)".into());
                    }
                    let s = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out).map_err(|e| e.to_string())?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram.as_mut().ok_or("unexpected SASL message")?;
                    s.update(b.data()).map_err(|e| format!("SCRAM authentication failed: {e}"))?;
                    frontend::sasl_response(s.message(), &mut out).map_err(|e| e.to_string())?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    let s = scram.as_mut().ok_or("unexpected SASL message")?;
                    s.finish(b.data()).map_err(|e| format!("the server's SCRAM signature is wrong: {e}"))?;
                }
                Message::ParameterStatus(p) => {
                    if p.name().ok() == Some("server_version") {
                        self.server_version = p.value().unwrap_or_default().to_string();
                    }
                }
                Message::BackendKeyData(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(e) => {
                    return Err(format!("the server at {} refused the replication connection for user {user}: {}", self.target, db_error(&e)))
                }
                _ => return Err("the server asked for an authentication method tidewal does not support (use scram-sha-256, md5, password or trust)".into()),
            }
            if !out.is_empty() {
                self.send(out).await?;
            }
        }
    }

    /// Run a replication command that answers with rows of text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut msg = BytesMut::new();
        frontend::query(sql, &mut msg).map_err(|e| e.to_string())?;
        self.send(msg).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv().await? {
                Message::DataRow(r) => rows.push(row_text(&r)),
                Message::ErrorResponse(e) => error = Some(db_error(&e)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(format!("{sql}: {e}")),
            None => Ok(rows),
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemIdent, String> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or("IDENTIFY_SYSTEM returned no row")?;
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemIdent {
            system_identifier: col(0)
                .parse()
                .map_err(|_| format!("IDENTIFY_SYSTEM: bad system identifier {:?}", col(0)))?,
            timeline: col(1).parse().map_err(|_| format!("IDENTIFY_SYSTEM: bad timeline {:?}", col(1)))?,
            xlogpos: col(2).parse()?,
        })
    }

    /// `TIMELINE_HISTORY tli`: the history file's name and content.
    pub async fn timeline_history(&mut self, tli: u32) -> Result<(String, Vec<u8>), String> {
        let rows = self.simple_query(&format!("TIMELINE_HISTORY {tli}")).await?;
        let row = rows.first().ok_or("TIMELINE_HISTORY returned no row")?;
        let name = row.first().cloned().flatten().unwrap_or_default();
        let content = row.get(1).cloned().flatten().unwrap_or_default().into_bytes();
        Ok((name, content))
    }

    /// A physical slot's restart position and timeline (`READ_REPLICATION_SLOT`, PG 15), or
    /// `None` when there is no such slot.
    pub async fn read_replication_slot(&mut self, slot: &str) -> Result<Option<(Lsn, u32)>, String> {
        let rows = self.simple_query(&format!("READ_REPLICATION_SLOT {}", quote_ident(slot))).await?;
        let row = rows.first().ok_or("READ_REPLICATION_SLOT returned no row")?;
        match (row.get(1).cloned().flatten(), row.get(2).cloned().flatten()) {
            (Some(lsn), tli) => Ok(Some((lsn.parse()?, tli.and_then(|t| t.parse().ok()).unwrap_or(1)))),
            (None, _) if row.first().cloned().flatten().is_some() => Ok(Some((Lsn(0), 1))),
            _ => Ok(None),
        }
    }

    /// Create a physical slot that holds WAL from now on.
    pub async fn create_physical_slot(&mut self, slot: &str) -> Result<(), String> {
        self.simple_query(&format!("CREATE_REPLICATION_SLOT {} PHYSICAL RESERVE_WAL", quote_ident(slot)))
            .await
            .map(|_| ())
    }

    /// Drop a slot (not in use by anyone).
    pub async fn drop_slot(&mut self, slot: &str) -> Result<(), String> {
        self.simple_query(&format!("DROP_REPLICATION_SLOT {}", quote_ident(slot))).await.map(|_| ())
    }

    /// `START_REPLICATION SLOT s PHYSICAL start TIMELINE tli`; WAL then arrives through
    /// [`ReplConn::next_wal_event`].
    pub async fn start_replication(&mut self, slot: &str, start: Lsn, tli: u32) -> Result<(), String> {
        let sql = format!("START_REPLICATION SLOT {} PHYSICAL {start} TIMELINE {tli}", quote_ident(slot));
        let mut msg = BytesMut::new();
        frontend::query(&sql, &mut msg).map_err(|e| e.to_string())?;
        self.send(msg).await?;
        loop {
            // postgres-protocol does not know CopyBothResponse ('W'): take it off by hand.
            if self.buf.len() >= 5 && self.buf[0] == b'W' {
                let len = declared_len(&self.buf).map_err(|e| format!("protocol error from {}: {e}", self.target))?;
                if self.buf.len() > len {
                    self.buf.advance(1 + len);
                    return Ok(());
                }
            } else if !self.buf.is_empty() && self.buf[0] != b'W' {
                if let Some(m) = next_message(&mut self.buf).map_err(|e| format!("protocol error: {e}"))? {
                    if let Message::ErrorResponse(e) = m {
                        let err = db_error(&e);
                        self.drain_to_ready().await;
                        return Err(format!("{sql}: {err}"));
                    }
                    continue;
                }
            }
            self.fill().await?;
        }
    }

    /// The next message of a replication stream.
    pub async fn next_wal_event(&mut self) -> Result<WalEvent, String> {
        loop {
            match self.recv().await? {
                Message::CopyData(d) => {
                    let Some((kind, b)) = copy_kind(d) else { continue };
                    return wal_event(kind, b);
                }
                // Returned as it is, so that this stays cancel-safe: the reply is not sent here.
                Message::CopyDone => return Ok(WalEvent::EndOfStream),
                Message::ErrorResponse(e) => {
                    return Err(format!("replication: {} (SQLSTATE {})", db_error(&e), sqlstate(&e)))
                }
                _ => {}
            }
        }
    }

    /// After [`WalEvent::EndOfStream`]: end our side too and read which timeline follows
    /// and where it starts. The connection then takes commands again.
    pub async fn end_of_timeline(&mut self) -> Result<(u32, Lsn), String> {
        let mut msg = BytesMut::new();
        frontend::copy_done(&mut msg);
        self.send(msg).await?;
        let mut next = None;
        loop {
            match self.recv().await? {
                Message::DataRow(r) => next = Some(row_text(&r)),
                Message::ErrorResponse(e) => return Err(db_error(&e)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        let row = next.ok_or("the server ended the stream without naming the next timeline")?;
        let tli = row.first().cloned().flatten().and_then(|t| t.parse().ok()).unwrap_or(0);
        let start: Lsn = row.get(1).cloned().flatten().and_then(|l| l.parse().ok()).unwrap_or_default();
        if tli == 0 {
            return Err(format!("the server ended the stream with an unreadable next timeline: {row:?}"));
        }
        Ok((tli, start))
    }

    /// Standby status update: written, flushed (here: durable in the repository) and applied.
    pub async fn send_status(&mut self, write: Lsn, flush: Lsn, reply: bool) -> Result<(), String> {
        // Microseconds since 2000-01-01, PostgreSQL's epoch.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let pg_now = now.as_micros() as i64 - 946_684_800_000_000;
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(write.0);
        body.put_u64(flush.0);
        body.put_u64(flush.0);
        body.put_i64(pg_now);
        body.put_u8(u8::from(reply));
        let mut msg = BytesMut::new();
        frontend::CopyData::new(&body[..]).map_err(|e| e.to_string())?.write(&mut msg);
        self.send(msg).await
    }

    /// `UPLOAD_MANIFEST` (PostgreSQL 17 and later): give the server the manifest of the backup
    /// the next `BASE_BACKUP (INCREMENTAL)` on this connection builds on. The server checks
    /// it (its system, the WAL summaries it needs) and keeps it for this connection only.
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<(), String> {
        let mut msg = BytesMut::new();
        frontend::query("UPLOAD_MANIFEST", &mut msg).map_err(|e| e.to_string())?;
        self.send(msg).await?;
        loop {
            match self.recv().await? {
                Message::CopyInResponse(_) => break,
                Message::ErrorResponse(e) => return Err(self.refused("UPLOAD_MANIFEST", &e).await),
                _ => {}
            }
        }
        let mut msg = BytesMut::with_capacity(manifest.len() + 64);
        for piece in manifest.chunks(64 << 10) {
            frontend::CopyData::new(piece).map_err(|e| e.to_string())?.write(&mut msg);
        }
        frontend::copy_done(&mut msg);
        self.send(msg).await?;
        let mut error = None;
        loop {
            match self.recv().await? {
                Message::ErrorResponse(e) => error = Some(db_error(&e)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        error.map_or(Ok(()), |e| Err(format!("UPLOAD_MANIFEST failed: {e}")))
    }

    /// Start `BASE_BACKUP` and read up to its copy stream.
    /// `checksums` is the manifest's algorithm (`CRC32C`, `SHA256`, ...). `incremental`
    /// sends only the blocks changed since the backup whose manifest was uploaded.
    pub async fn start_base_backup(
        &mut self,
        label: &str,
        fast: bool,
        checksums: &str,
        incremental: bool,
    ) -> Result<BackupStart, String> {
        let label = label.replace('\'', "''");
        let checkpoint = if fast { "fast" } else { "spread" };
        let incremental = if incremental { ", INCREMENTAL" } else { "" };
        let sql = format!(
            "BASE_BACKUP (LABEL '{label}', PROGRESS, CHECKPOINT '{checkpoint}', WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS '{checksums}'{incremental})"
        );
        let mut msg = BytesMut::new();
        frontend::query(&sql, &mut msg).map_err(|e| e.to_string())?;
        self.send(msg).await?;
        // Result sets before the copy stream: the finished ones, and the one being read.
        let mut sets: Vec<Vec<Vec<Option<String>>>> = Vec::new();
        let mut rows = Vec::new();
        loop {
            match self.recv().await? {
                Message::DataRow(r) => rows.push(row_text(&r)),
                Message::CommandComplete(_) => sets.push(std::mem::take(&mut rows)),
                Message::CopyOutResponse(_) => break,
                Message::ErrorResponse(e) => return Err(self.refused("BASE_BACKUP", &e).await),
                _ => {}
            }
        }
        if !rows.is_empty() {
            sets.push(rows);
        }
        let start = sets.first().and_then(|s| s.first()).ok_or("BASE_BACKUP sent no start position")?;
        let col = |i: usize| start.get(i).cloned().flatten().unwrap_or_default();
        let tablespaces = sets
            .get(1)
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        let oid = r.first().cloned().flatten()?.parse().ok()?;
                        Some((oid, r.get(1).cloned().flatten().unwrap_or_default()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // PROGRESS adds each tablespace's size in kB as the third column.
        let kb: u64 = sets
            .get(1)
            .map(|rows| rows.iter().filter_map(|r| r.get(2).cloned().flatten()?.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        Ok(BackupStart {
            start_lsn: col(0).parse()?,
            timeline: col(1).parse().map_err(|_| "BASE_BACKUP sent a bad timeline")?,
            tablespaces,
            estimated_bytes: kb * 1024,
        })
    }

    /// The next piece of the backup stream, or `None` at its end.
    pub async fn next_backup_event(&mut self) -> Result<Option<BackupEvent>, String> {
        loop {
            match self.recv().await? {
                Message::CopyData(d) => {
                    let Some((kind, b)) = copy_kind(d) else { continue };
                    return backup_event(kind, b).map(Some);
                }
                Message::CopyDone => return Ok(None),
                Message::ErrorResponse(e) => return Err(self.refused("BASE_BACKUP", &e).await),
                _ => {}
            }
        }
    }

    /// After the copy stream: the end position.
    pub async fn finish_base_backup(&mut self) -> Result<(Lsn, u32), String> {
        let mut end = None;
        let mut error = None;
        loop {
            match self.recv().await? {
                Message::DataRow(r) => {
                    let row = row_text(&r);
                    if end.is_none() {
                        end = Some(row);
                    }
                }
                Message::ErrorResponse(e) => error = Some(db_error(&e)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        if let Some(e) = error {
            return Err(format!("BASE_BACKUP failed: {e}"));
        }
        let row = end.ok_or("BASE_BACKUP sent no end position")?;
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok((col(0).parse()?, col(1).parse().map_err(|_| "BASE_BACKUP sent a bad timeline")?))
    }

    /// The server refused `what`: its message, once the connection is ready for the next.
    async fn refused(&mut self, what: &str, e: &postgres_protocol::message::backend::ErrorResponseBody) -> String {
        let err = db_error(e);
        self.drain_to_ready().await;
        format!("{what} failed: {err}")
    }

    async fn drain_to_ready(&mut self) {
        while let Ok(m) = self.recv().await {
            if matches!(m, Message::ReadyForQuery(_)) {
                break;
            }
        }
    }
}

/// The largest backend message accepted. PostgreSQL sends WAL in pieces of at most 128 kB
/// and BASE_BACKUP data in smaller ones; a length field beyond this is damage or a hostile
/// server, and must not make us reserve gigabytes for it.
const MAX_MESSAGE: usize = 64 << 20;

/// The length a message header (tag, u32 length) declares, refused beyond [`MAX_MESSAGE`].
fn declared_len(buf: &[u8]) -> Result<usize, String> {
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(format!(
            "a message of type {:?} claims {len} bytes, more than the {MAX_MESSAGE} accepted",
            buf[0] as char
        ));
    }
    Ok(len)
}

/// The next whole backend message in `buf`, `None` when more bytes are needed (pure).
fn next_message(buf: &mut BytesMut) -> Result<Option<Message>, String> {
    if buf.len() >= 5 {
        declared_len(buf)?;
    }
    Message::parse(buf).map_err(|e| e.to_string())
}

/// One CopyData message of a physical replication stream (pure).
fn wal_event(kind: u8, mut b: Bytes) -> Result<WalEvent, String> {
    match kind {
        b'w' if b.len() >= 24 => {
            let start = Lsn(b.get_u64());
            let _end = b.get_u64();
            let _sent = b.get_u64();
            Ok(WalEvent::Data { start, data: b })
        }
        b'k' if b.len() >= 17 => {
            let end = Lsn(b.get_u64());
            let _sent = b.get_u64();
            Ok(WalEvent::Keepalive { end, reply: b.get_u8() != 0 })
        }
        b'w' | b'k' => Err(format!("a replication message of type {:?} cut short ({} bytes)", kind as char, b.len())),
        other => Err(format!("unexpected replication message type {:?}", other as char)),
    }
}

/// One CopyData message of the BASE_BACKUP stream (pure).
fn backup_event(kind: u8, mut b: Bytes) -> Result<BackupEvent, String> {
    Ok(match kind {
        b'n' => {
            let mut parts = b.split(|c| *c == 0).map(|p| String::from_utf8_lossy(p).into_owned());
            let name = parts.next().unwrap_or_default();
            let location = parts.next().filter(|l| !l.is_empty());
            // The name becomes part of an object name: only what PostgreSQL sends passes.
            let oid = name.strip_suffix(".tar").filter(|o| *o == "base" || o.parse::<u32>().is_ok());
            if oid.is_none() {
                return Err(format!("BASE_BACKUP named an archive {name:?}, not base.tar or OID.tar"));
            }
            BackupEvent::Archive { name, tablespace: location }
        }
        b'd' => BackupEvent::Data(b),
        b'p' if b.len() >= 8 => BackupEvent::Progress(b.get_u64()),
        b'm' => BackupEvent::Manifest,
        other => return Err(format!("unexpected BASE_BACKUP message type {:?} ({} bytes)", other as char, b.len())),
    })
}

/// A CopyData payload's sub-message type and body (both replication streams use them).
fn copy_kind(d: postgres_protocol::message::backend::CopyDataBody) -> Option<(u8, Bytes)> {
    let mut b = d.into_bytes();
    (!b.is_empty()).then(|| (b.get_u8(), b))
}

fn row_text(r: &postgres_protocol::message::backend::DataRowBody) -> Vec<Option<String>> {
    let buf = r.buffer();
    let mut ranges = r.ranges();
    let mut row = Vec::new();
    while let Ok(Some(range)) = ranges.next() {
        row.push(range.map(|rg| String::from_utf8_lossy(&buf[rg]).into_owned()));
    }
    row
}

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
