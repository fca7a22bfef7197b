//! Leases in the repository: one daemon per repository (`locks/daemon.json`), one base
//! backup at a time (`locks/backup.json`), whichever host they run on. A lease is a small
//! sealed object naming its holder. The holder rewrites it every third of the timeout; one
//! not rewritten for the timeout, measured by the store's own clock (the objects'
//! modification times, never the holder's), is stale and is taken over with a warning. A
//! holder on this machine, in this pid namespace, whose process is gone (kill -9) is taken
//! over at once. The decision is pure ([`decide`]); the I/O around it follows.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{open_to_vec, seal_to_vec, Keyring, SealOptions};
use crate::error::{Code, Fail, Result};
use crate::store::{Created, Store, StoreError};

use super::Repo;

pub const DAEMON: &str = "locks/daemon.json";
pub const BACKUP: &str = "locks/backup.json";
const PREFIX: &str = "locks";
/// Probes of the store's clock are `locks/clock-<token>`; ones older than this are debris.
const CLOCK_PROBE: &str = "locks/clock-";
const PROBE_DEBRIS: Duration = Duration::from_secs(3600);
/// A lease not renewed for this long is stale; it is renewed every third of it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Who holds a lease. `machine` says where `pid` means something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// What holds it: "tidewal daemon", "base backup".
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// Host name, boot and pid namespace, hashed; empty when unknown.
    pub machine: String,
    /// Random per acquisition: tells this holder from an earlier one with the same pid.
    pub token: String,
    pub started: String,
    pub renewed_at: String,
}

impl Lease {
    /// "tidewal daemon on host db1 (pid 4242)".
    pub fn describe(&self) -> String {
        format!("{} on host {} (pid {})", self.holder, self.host, self.pid)
    }
}

/// A lease found in the repository.
#[derive(Clone, Debug)]
pub struct Seen {
    pub lease: Lease,
    /// Its last write, by the store's clock.
    pub modified: SystemTime,
    /// Its holder ran on this machine and its process no longer exists.
    pub holder_gone: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Absent, or already ours: write it.
    Take,
    /// Live and someone else's.
    Refuse(Lease),
    /// Not renewed within the timeout: write ours over it, with a warning.
    TakeOverStale(Lease),
    /// Its holder is provably gone (this machine, no such process): write ours over it.
    Reclaim(Lease),
}

/// What to do about the lease found (pure). `now` is the store's clock, like `modified`.
pub fn decide(existing: Option<&Seen>, me: &Lease, now: SystemTime, timeout: Duration) -> Decision {
    let Some(seen) = existing else { return Decision::Take };
    if seen.lease.token == me.token {
        return Decision::Take;
    }
    if seen.holder_gone {
        return Decision::Reclaim(seen.lease.clone());
    }
    // A modification time ahead of `now` counts as just renewed.
    let age = now.duration_since(seen.modified).unwrap_or_default();
    if age > timeout {
        Decision::TakeOverStale(seen.lease.clone())
    } else {
        Decision::Refuse(seen.lease.clone())
    }
}

/// Is the holder of `theirs` provably gone (pure, `alive` asks about a pid)? Only on the
/// same machine and pid namespace, and never for our own pid (that is another acquisition
/// in this process, or a pid reused: either way not provably gone).
pub fn holder_gone(theirs: &Lease, me: &Lease, alive: impl Fn(u32) -> bool) -> bool {
    !me.machine.is_empty() && theirs.machine == me.machine && theirs.pid != me.pid && !alive(theirs.pid)
}

/// This process's lease record, for a holder described by `holder`.
pub fn me(holder: &str, now: SystemTime) -> Lease {
    let at = humantime::format_rfc3339_seconds(now).to_string();
    Lease {
        holder: holder.to_string(),
        host: hostname(),
        pid: std::process::id(),
        machine: machine(),
        token: format!("{:016x}", rand::random::<u64>()),
        started: at.clone(),
        renewed_at: at,
    }
}

/// The lease timeout: [`DEFAULT_TIMEOUT`], or `TIDEWAL_TEST_LEASE_TIMEOUT` (a humantime
/// duration), a hidden setting that lets tests see a lease go stale in seconds.
pub fn configured_timeout() -> Duration {
    std::env::var("TIDEWAL_TEST_LEASE_TIMEOUT")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if rc != 0 || end == 0 {
        return "unknown".into();
    }
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Host name, kernel boot and pid namespace: where a pid names the same process. Empty
/// (pids are then never compared) when any is unknown.
fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        return String::new();
    }
    let h = blake3::hash(format!("{}\n{}\n{ns}", hostname(), boot.trim()).as_bytes());
    h.to_hex()[..16].to_string()
}

/// Whether a process exists here (a permission error means it does).
fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else { return true };
    if p <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; p > 0 names one process.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The store and keys a lease needs, cloned into its renewal task.
#[derive(Clone)]
struct Place {
    store: Store,
    keys: Keyring,
    conditional: bool,
    obj: String,
}

impl Place {
    fn seal(&self, lease: &Lease) -> Result<Bytes> {
        let json = serde_json::to_vec_pretty(lease).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        let sealed = seal_to_vec(
            &json,
            self.keys.write_key(),
            &self.obj,
            SealOptions { lz4: false, digest: None, chain: false },
        )
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        Ok(Bytes::from(sealed.out))
    }

    async fn read(&self) -> Result<Option<Lease>> {
        let raw = match self.store.get_bytes(&self.obj).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let plain = open_to_vec(&raw, &self.keys, &self.obj).map_err(|e| {
            Fail::new(Code::Integrity, format!("lease {}: {e}; if no tidewal holds it, remove it", self.obj))
        })?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| {
            Fail::new(
                Code::Integrity,
                format!("lease {}: not valid JSON ({e}); if no tidewal holds it, remove it", self.obj),
            )
        })
    }

    /// The lease as it is and the store's clock now: a probe object is written and listed
    /// beside it, so both times come from the store.
    async fn observe(&self, me: &Lease) -> Result<(Option<Seen>, SystemTime)> {
        let probe = format!("{CLOCK_PROBE}{}", me.token);
        self.store.put(&probe, Bytes::from_static(b"clock")).await?;
        let listing = self.store.list_meta(PREFIX).await;
        self.store.delete(&probe).await?;
        let listing = listing?;
        let now = listing.iter().find(|o| o.name == probe).map(|o| o.modified).unwrap_or_else(SystemTime::now);
        for o in listing.iter().filter(|o| o.name.starts_with(CLOCK_PROBE) && o.name != probe) {
            if now.duration_since(o.modified).unwrap_or_default() > PROBE_DEBRIS {
                let _ = self.store.delete(&o.name).await;
            }
        }
        let Some(meta) = listing.iter().find(|o| o.name == self.obj) else { return Ok((None, now)) };
        let Some(lease) = self.read().await? else { return Ok((None, now)) };
        let holder_gone = holder_gone(&lease, me, pid_alive);
        Ok((Some(Seen { lease, modified: meta.modified, holder_gone }), now))
    }

    /// Write ours: create-only when there was none (`fresh`), over the old one otherwise;
    /// then read it back, since a store without create-only writes (or a racing takeover)
    /// can leave another holder's record there. `Ok(None)` when ours is there now.
    async fn write(&self, me: &Lease, fresh: bool) -> Result<Option<Lease>> {
        let data = self.seal(me)?;
        if fresh {
            if self.store.create(&self.obj, data, self.conditional).await? == Created::AlreadyExists {
                return Ok(self.read().await?.filter(|l| l.token != me.token));
            }
        } else {
            self.store.put(&self.obj, data).await?;
        }
        Ok(self.read().await?.filter(|l| l.token != me.token))
    }
}

/// A lease held, renewed by a task of its own until [`Held::release`] (or drop).
pub struct Held {
    place: Place,
    me: Lease,
    renewer: tokio::task::JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<Option<String>>,
    released: bool,
}

fn refused(obj: &str, l: &Lease, age: Duration, timeout: Duration) -> Fail {
    Fail::new(
        Code::Conflict,
        format!(
            "{} holds the lease {obj} (started {}, renewed {}s ago): refusing to run beside it; it is taken over once not renewed for {}",
            l.describe(),
            l.started,
            age.as_secs(),
            humantime::format_duration(timeout)
        ),
    )
}

/// Take the lease `obj` for `holder`, or refuse with a conflict naming the holder.
pub async fn acquire(repo: &Repo, obj: &str, holder: &str, timeout: Duration) -> Result<Held> {
    repo.ensure_writable()?;
    let place = Place {
        store: repo.store.clone(),
        keys: repo.keys.clone(),
        conditional: repo.identity.conditional_writes,
        obj: obj.to_string(),
    };
    let me = me(holder, SystemTime::now());
    // Twice at most: a lost race is decided again, and the winner is then live.
    for _ in 0..2 {
        let (seen, now) = place.observe(&me).await?;
        let age = seen.as_ref().map(|s| now.duration_since(s.modified).unwrap_or_default()).unwrap_or_default();
        let winner = match decide(seen.as_ref(), &me, now, timeout) {
            Decision::Refuse(l) => return Err(refused(obj, &l, age, timeout)),
            Decision::Take => place.write(&me, seen.is_none()).await?,
            Decision::TakeOverStale(l) => {
                tracing::warn!(
                    "taking over the lease {obj} from {}: not renewed for {}s (more than {})",
                    l.describe(),
                    age.as_secs(),
                    humantime::format_duration(timeout)
                );
                place.write(&me, false).await?
            }
            Decision::Reclaim(l) => {
                tracing::warn!("taking over the lease {obj} from {}: that process is gone", l.describe());
                place.write(&me, false).await?
            }
        };
        if winner.is_none() {
            let (tx, lost) = tokio::sync::watch::channel(None);
            let renewer = tokio::spawn(renew(place.clone(), me.clone(), timeout, tx));
            return Ok(Held { place, me, renewer, lost, released: false });
        }
    }
    let (seen, now) = place.observe(&me).await?;
    match seen {
        Some(s) => Err(refused(obj, &s.lease, now.duration_since(s.modified).unwrap_or_default(), timeout)),
        None => Err(Fail::new(Code::Conflict, format!("lease {obj}: lost a race to take it twice; try again"))),
    }
}

/// Rewrite the lease every third of the timeout while it is ours; report when it is not.
async fn renew(place: Place, mut me: Lease, timeout: Duration, lost: tokio::sync::watch::Sender<Option<String>>) {
    let every = timeout / 3;
    loop {
        tokio::time::sleep(every).await;
        let theirs = match place.read().await {
            Ok(Some(l)) if l.token == me.token => {
                me.renewed_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                place.write(&me, false).await
            }
            Ok(Some(l)) => Ok(Some(l)),
            // Gone: someone may have taken it over while we were frozen (a paused VM, a swap
            // storm), done their work believing us dead (prune deleting an interrupted
            // backup's objects) and released it. Carrying on would be unsafe; a daemon is
            // restarted by its supervisor and takes the lease anew.
            Ok(None) => {
                let _ = lost.send(Some(format!("the lease {} was removed while we held it", place.obj)));
                return;
            }
            Err(e) => Err(e),
        };
        match theirs {
            Ok(None) => {}
            Ok(Some(l)) => {
                let _ = lost.send(Some(format!("the lease {} was taken over by {}", place.obj, l.describe())));
                return;
            }
            Err(e) => tracing::warn!("cannot renew the lease {}: {e}", place.obj),
        }
    }
}

impl Held {
    pub fn lease(&self) -> &Lease {
        &self.me
    }

    /// Wait until the lease is lost to another holder; why.
    pub async fn lost(&mut self) -> String {
        loop {
            if let Some(why) = self.lost.borrow_and_update().clone() {
                return why;
            }
            if self.lost.changed().await.is_err() {
                // The renewer only ends by reporting a loss or by being aborted in `release`
                // or `drop`, which consume the lease; gone otherwise, it panicked, and a
                // lease nobody renews is as good as lost.
                return format!("the lease {} is no longer renewed (its renewer stopped)", self.place.obj);
            }
        }
    }

    /// Stop renewing and remove the lease if it is still ours.
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        release(&self.place, &self.me).await;
    }
}

async fn release(place: &Place, me: &Lease) {
    match place.read().await {
        Ok(Some(l)) if l.token == me.token => {
            if let Err(e) = place.store.delete(&place.obj).await {
                tracing::warn!("cannot remove the lease {}: {e}", place.obj);
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot remove the lease {}: {e}", place.obj),
    }
}

impl Drop for Held {
    /// Dropped without `release` (its holder was cancelled): remove it in the background.
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.released {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (place, me) = (self.place.clone(), self.me.clone());
                rt.spawn(async move { release(&place, &me).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Key, Keyring};
    use object_store::memory::InMemory;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn lease(token: &str, pid: u32, machine: &str) -> Lease {
        Lease {
            holder: "tidewal daemon".into(),
            host: "db1".into(),
            pid,
            machine: machine.into(),
            token: token.into(),
            started: "2026-11-26T00:00:00Z".into(),
            renewed_at: "2026-11-26T00:00:00Z".into(),
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    const T: Duration = Duration::from_secs(180);

    #[test]
    fn decisions() {
        let me = lease("mine", 10, "m1");
        let other = lease("theirs", 20, "m2");
        let seen = |l: &Lease, modified, gone| Seen { lease: l.clone(), modified, holder_gone: gone };
        assert_eq!(decide(None, &me, at(0), T), Decision::Take);
        assert_eq!(decide(Some(&seen(&me, at(0), false)), &me, at(1000), T), Decision::Take);
        assert_eq!(decide(Some(&seen(&other, at(0), false)), &me, at(180), T), Decision::Refuse(other.clone()));
        assert_eq!(decide(Some(&seen(&other, at(0), false)), &me, at(181), T), Decision::TakeOverStale(other.clone()));
        // A modification time ahead of the store's now is live, not stale.
        assert_eq!(decide(Some(&seen(&other, at(500), false)), &me, at(0), T), Decision::Refuse(other.clone()));
        assert_eq!(decide(Some(&seen(&other, at(0), true)), &me, at(1), T), Decision::Reclaim(other.clone()));
    }

    #[test]
    fn only_a_holder_on_this_machine_can_be_gone() {
        let me = lease("mine", 10, "m1");
        let dead = |_| false;
        assert!(holder_gone(&lease("x", 20, "m1"), &me, dead));
        assert!(!holder_gone(&lease("x", 20, "m1"), &me, |_| true), "a live process is not gone");
        assert!(!holder_gone(&lease("x", 20, "m2"), &me, dead), "another machine's pid means nothing here");
        assert!(!holder_gone(&lease("x", 10, "m1"), &me, dead), "our own pid");
        assert!(!holder_gone(&lease("x", 20, ""), &lease("mine", 10, ""), dead), "unknown machines");
    }

    proptest! {
        #[test]
        fn someone_elses_live_lease_is_never_taken(age in 0u64..1000, ahead in any::<bool>(), gone in any::<bool>()) {
            let me = lease("mine", 10, "m1");
            let other = lease("theirs", 20, "m2");
            let (modified, now) = if ahead { (at(age), at(0)) } else { (at(0), at(age)) };
            let d = decide(Some(&Seen { lease: other.clone(), modified, holder_gone: gone }), &me, now, T);
            let live = ahead || age <= T.as_secs();
            prop_assert_eq!(matches!(d, Decision::Refuse(_)), live && !gone);
            prop_assert!(d != Decision::Take);
        }
    }

    fn repo(conditional: bool) -> Repo {
        let keys = Keyring::new(Key::from_text(&"44".repeat(32), "t").unwrap(), vec![]);
        // A store without conditional writes is accepted here, as configuration can.
        let store = Store::from_object_store(Arc::new(InMemory::new()), "memory://")
            .with_conditional_writes_required(conditional);
        let identity = crate::repo::Identity {
            format: crate::repo::FORMAT,
            system_identifier: "7".into(),
            pg_version_num: 150010,
            wal_segment_size: 16 << 20,
            encrypted: true,
            key_id: None,
            conditional_writes: conditional,
            cipher: Default::default(),
            created_at: "2026-11-26T00:00:00Z".into(),
            created_by: "test".into(),
        };
        Repo { store, keys, lz4: false, identity }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        for conditional in [true, false] {
            let r = repo(conditional);
            let held = acquire(&r, BACKUP, "base backup", T).await.unwrap();
            let e = acquire(&r, BACKUP, "base backup", T).await.err().unwrap();
            assert_eq!(e.code, Code::Conflict);
            assert!(e.message.contains(&format!("pid {}", std::process::id())), "{e}");
            // Our own pid is never taken for gone: another acquisition in this process.
            held.release().await;
            assert!(!r.store.exists(BACKUP).await.unwrap());
            assert!(r.store.list("locks").await.unwrap().is_empty(), "clock probes are left");
            let again = acquire(&r, BACKUP, "base backup", T).await.unwrap();
            drop(again);
            // Dropped: removed in the background.
            for _ in 0..100 {
                if !r.store.exists(BACKUP).await.unwrap() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!r.store.exists(BACKUP).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_stale_lease_is_taken_over_and_its_old_holder_learns_it() {
        let r = repo(true);
        let short = Duration::from_millis(300);
        let mut first = acquire(&r, DAEMON, "tidewal daemon", Duration::from_secs(3600)).await.unwrap();
        // The first holder stops renewing (a frozen process) and its lease ages past `short`.
        first.renewer.abort();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let second = acquire(&r, DAEMON, "tidewal daemon", short).await.unwrap();
        let place = first.place.clone();
        // The first holder's next renewal finds the second's record.
        let (tx, rx) = tokio::sync::watch::channel(None);
        first.lost = rx;
        tokio::spawn(renew(place, first.me.clone(), short, tx));
        let why = tokio::time::timeout(Duration::from_secs(10), first.lost()).await.unwrap();
        assert!(why.contains("taken over by tidewal daemon"), "{why}");
        // Releasing a lease that is no longer ours leaves the new holder's alone.
        first.release().await;
        assert_eq!(place_of(&r).read().await.unwrap().unwrap().token, second.lease().token);
    }

    fn place_of(r: &Repo) -> Place {
        Place { store: r.store.clone(), keys: r.keys.clone(), conditional: true, obj: DAEMON.into() }
    }
}
