//! `tidewal init`: bind a repository to the cluster the connection settings reach.

use crate::codec::Cipher;
use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::format_size;
use crate::pg::sql;
use crate::pg::walfile::page_magic;
use crate::repo::{layout, Identity, Repo, FORMAT};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Create a repository without encryption (objects are still checksummed)
    #[arg(long)]
    pub no_encryption: bool,
    /// The cipher new objects are sealed with; recorded in the repository, so no other
    /// command needs it (objects of either kind are always readable)
    /// [default: xchacha20-poly1305]
    #[arg(long, value_enum)]
    pub cipher: Option<Cipher>,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let key = settings.keys.write_key();
    if args.no_encryption && args.cipher.is_some() {
        return Err(Fail::new(Code::Usage, "--cipher and --no-encryption exclude each other"));
    }
    if key.is_none() && !args.no_encryption {
        return Err(Fail::new(
            Code::Usage,
            "no key is configured: create one with `tidewal keygen --output /etc/tidewal/key` and set repository.key_file, \
             or pass --no-encryption to store objects unencrypted",
        ));
    }
    let client = sql::connect(settings.conninfo.as_deref()).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    let info = sql::server_info(&client).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    if page_magic(info.version_num / 10000).is_none() {
        return Err(Fail::new(
            Code::Usage,
            format!("PostgreSQL {} is not supported (13 to 18 are; 15 to 18 are tested)", info.version),
        ));
    }
    let store = Store::open_or_make(&settings.repo_url, &settings.store)?;
    let conditional = store.probe_conditional_writes(&probe_name()).await?;
    let identity = Identity {
        format: FORMAT,
        system_identifier: info.system_identifier.to_string(),
        pg_version_num: info.version_num,
        wal_segment_size: info.wal_segment_size,
        encrypted: key.is_some(),
        key_id: key.map(|k| k.id_hex()),
        conditional_writes: conditional,
        cipher: args.cipher.unwrap_or_default(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        created_by: format!("tidewal {}", env!("CARGO_PKG_VERSION")),
    };
    let (repo, created) = Repo::init(store, settings.keys.clone(), settings.lz4, identity).await?;
    let id = &repo.identity;
    if created {
        println!(
            "initialised {} for database system {} (PostgreSQL {}, {} WAL segments, {})",
            repo.store.url(),
            id.system_identifier,
            info.version,
            format_size(id.wal_segment_size),
            match &id.key_id {
                Some(k) => format!("encrypted with key {k}, {}", id.cipher.name()),
                None => "not encrypted".into(),
            }
        );
    } else {
        println!(
            "{} is already initialised for database system {}; nothing changed",
            repo.store.url(),
            id.system_identifier
        );
        if id.encrypted && args.cipher.is_some_and(|c| c != id.cipher) {
            println!(
                "note: it seals with {}, chosen when it was made; --cipher applies to new repositories only",
                id.cipher.name()
            );
        }
    }
    if !conditional {
        // Only reached when repository.require_conditional_writes = false accepts the store.
        println!(
            "warning: the store ignores conditional writes (accepted by repository.require_conditional_writes = false): \
             tidewal checks before and after each write, which cannot stop two concurrent writers; only one may write here"
        );
    }
    Ok(())
}

pub fn probe_name() -> String {
    layout::probe_name()
}
