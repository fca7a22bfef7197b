//! What a restore removes from the configuration files that came with a backup, as pure text
//! functions: a backup of a cluster that was itself restored or forked carries that restore's
//! recovery settings (`recovery_target = 'immediate'`, a `restore_command`, a fork's `port`,
//! `archive_mode = off`), and a later restore must not inherit them.

/// The first line of the block a restore writes (and of every earlier restore's block).
pub const MARKER: &str = "# added by tidewal restore";
/// What a line that a restore disabled starts with.
pub const REMOVED: &str = "# removed by tidewal restore: ";
/// Earlier versions marked a fork's settings with this line.
const OLD_FORK_MARKER: &str = "# tidewal fork:";
/// A placeholder setting in the block, naming the ordinary settings it added with their
/// values (`port=5433,archive_mode=off`). `ALTER SYSTEM` rewrites postgresql.auto.conf
/// without comments but keeps settings, so this survives where the marker does not.
pub const ADDED: &str = "tidewal.restore_added";

/// Settings that only mean something during recovery, or for a standby (a restore never
/// makes one): each is removed wherever it stands.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "recovery_min_apply_delay",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
];

/// A configuration file's text with the inherited settings commented out.
#[derive(Debug, PartialEq, Eq)]
pub struct Cleaned {
    pub text: String,
    /// The settings commented out, lower case, in file order (a name may repeat).
    pub removed: Vec<String>,
}

/// Comment out every recovery setting, and every setting of a block an earlier tidewal
/// restore or fork added (a marker line, then settings up to a blank line or comment).
/// Everything else, the user's own `port` included, stays as it was.
pub fn clean(text: &str) -> Cleaned {
    let mut out = String::with_capacity(text.len() + 64);
    let mut removed = Vec::new();
    let mut in_block = false;
    // What earlier blocks added, by name and value: still ours only while the value is.
    let added: Vec<(String, String)> = text
        .split('\n')
        .filter_map(|l| setting(l.trim_start()))
        .filter(|(n, _)| n == ADDED)
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with(MARKER) || trimmed.starts_with(OLD_FORK_MARKER) {
            in_block = true;
            out.push_str(REMOVED);
            out.push_str(trimmed.trim_end());
            continue;
        }
        let ours = |name: &str| {
            name == ADDED
                || RECOVERY_SETTINGS.contains(&name)
                || setting(trimmed)
                    .is_some_and(|(n, v)| added.iter().any(|(an, av)| *an == n && *av == v.to_ascii_lowercase()))
        };
        match setting_name(trimmed) {
            Some(name) if in_block || ours(&name) => {
                out.push_str(REMOVED);
                out.push_str(trimmed.trim_end());
                // The block's last line: a user's line right after it is the user's.
                if name == ADDED {
                    in_block = false;
                }
                removed.push(name);
            }
            Some(_) => out.push_str(line),
            None => {
                // A blank line or a comment ends a block.
                in_block = false;
                out.push_str(line);
            }
        }
    }
    Cleaned { text: out, removed }
}

/// The name a configuration line sets, lower case (PostgreSQL's names are case-insensitive):
/// `name = value`, `name value` or `name=value`; None for comments and blank lines.
fn setting_name(line: &str) -> Option<String> {
    let first = line.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let end =
        line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')).unwrap_or(line.len());
    let rest = &line[end..];
    // `restore_command-x` is not restore_command: the name ends at space, `=`, `#` or the end.
    if !(rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace() || c == '=' || c == '#')) {
        return None;
    }
    Some(line[..end].to_ascii_lowercase())
}

/// A setting's name (lower case) and value (unquoted), or None.
fn setting(line: &str) -> Option<(String, String)> {
    let name = setting_name(line)?;
    let rest = line[name.len()..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    let value = match rest.strip_prefix('\'') {
        Some(q) => {
            // '' and \' are quotes inside a quoted value.
            let (mut v, mut chars) = (String::new(), q.chars().peekable());
            while let Some(c) = chars.next() {
                match (c, chars.peek()) {
                    ('\'', Some('\'')) | ('\\', Some(_)) => v.extend(chars.next()),
                    ('\'', _) => break,
                    _ => v.push(c),
                }
            }
            v
        }
        None => rest.split(|c: char| c.is_whitespace() || c == '#').next().unwrap_or_default().to_string(),
    };
    Some((name, value))
}

/// The block a restore appends: its marker with `what` (e.g. "a copy: archiving off"), the
/// settings, one a line, and [`ADDED`] naming the ordinary settings among `added` (name, value).
pub fn block(what: &str, settings: &[String], added: &[(&str, String)]) -> String {
    let mut s = format!("{MARKER}: {what}\n");
    for l in settings {
        s.push_str(l);
        s.push('\n');
    }
    // Always last, even when empty: it closes the block for a later restore's `clean`, and
    // the blank line after it closes it where `ALTER SYSTEM` has not rewritten the file.
    let list: Vec<String> = added.iter().map(|(n, v)| format!("{n}={v}")).collect();
    s.push_str(&format!("{ADDED} = {}\n\n", quote(&list.join(","))));
    s
}

/// `v` as a single-quoted configuration value.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(c: &Cleaned, line: &str) -> bool {
        c.text.lines().any(|l| l == line)
    }

    fn disabled(c: &Cleaned, line: &str) -> bool {
        c.text.lines().any(|l| l == format!("{REMOVED}{line}"))
    }

    #[test]
    fn a_block_ends_at_its_last_line() {
        // A block written without a blank line after it, then a user's own line (echo >>).
        let earlier = block("a copy", &["restore_command = 'x'".to_string()], &[]);
        let text = format!("{}work_mem = '64MB'\n", earlier.trim_end_matches('\n').to_string() + "\n");
        let c = clean(&text);
        assert!(kept(&c, "work_mem = '64MB'"), "{}", c.text);
        assert!(disabled(&c, "restore_command = 'x'"), "{}", c.text);
    }

    #[test]
    fn earlier_restore_and_fork_blocks_are_disabled() {
        // What earlier versions wrote: a restore block, then a fork's.
        let auto = "# Do not edit this file manually!\n\
                    archive_command = '/usr/bin/tidewal wal-push %p'\n\
                    \n\
                    # added by tidewal restore\n\
                    restore_command = '/usr/bin/tidewal wal-fetch %f %p'\n\
                    recovery_target = 'immediate'\n\
                    recovery_target_action = 'promote'\n\
                    # tidewal fork: an independent cluster\n\
                    port = 5433\n\
                    archive_mode = off\n";
        let c = clean(auto);
        assert!(kept(&c, "archive_command = '/usr/bin/tidewal wal-push %p'"), "{}", c.text);
        for l in [
            "restore_command = '/usr/bin/tidewal wal-fetch %f %p'",
            "recovery_target = 'immediate'",
            "recovery_target_action = 'promote'",
            "port = 5433",
            "archive_mode = off",
            "# added by tidewal restore",
            "# tidewal fork: an independent cluster",
        ] {
            assert!(disabled(&c, l), "{l:?} should be commented out:\n{}", c.text);
        }
        assert_eq!(c.removed, ["restore_command", "recovery_target", "recovery_target_action", "port", "archive_mode"]);
        // Nothing is lost: the line count stays, and a second pass finds nothing more.
        assert_eq!(c.text.lines().count(), auto.lines().count());
        let again = clean(&c.text);
        assert_eq!(again.text, c.text);
        assert!(again.removed.is_empty());
    }

    #[test]
    fn this_versions_block_is_disabled_by_the_next_restore() {
        let added = [("port", "6000".to_string()), ("archive_mode", "off".to_string())];
        let lines = ["restore_command = 'x'".into(), "port = 6000".into(), "archive_mode = off".into()];
        let ours = block("a fork", &lines, &added);
        let text = format!("shared_buffers = '1GB'\n\n{ours}");
        let c = clean(&text);
        assert_eq!(c.removed, ["restore_command", "port", "archive_mode", ADDED]);
        assert!(kept(&c, "shared_buffers = '1GB'"));
    }

    #[test]
    fn what_a_block_added_is_found_after_alter_system_rewrote_the_file() {
        // ALTER SYSTEM keeps settings, drops comments, and quotes every value.
        let auto = "# Do not edit this file manually!\n\
                    # It will be overwritten by the ALTER SYSTEM command.\n\
                    restore_command = '/usr/bin/tidewal --config /d/tidewal-restore.toml wal-fetch %f %p'\n\
                    recovery_target_action = 'promote'\n\
                    port = '6000'\n\
                    archive_mode = 'off'\n\
                    tidewal.restore_added = 'port=6000,archive_mode=off'\n\
                    work_mem = '64MB'\n";
        let c = clean(auto);
        assert_eq!(c.removed, ["restore_command", "recovery_target_action", "port", "archive_mode", ADDED]);
        assert!(kept(&c, "work_mem = '64MB'"));
        // A value the user changed since is the user's.
        let changed = auto.replace("archive_mode = 'off'", "archive_mode = 'on'").replace("port = '6000'", "Port=7000");
        let c = clean(&changed);
        assert!(kept(&c, "archive_mode = 'on'") && kept(&c, "Port=7000"), "{}", c.text);
    }

    #[test]
    fn values_are_read_as_postgresql_reads_them() {
        assert_eq!(setting("port = '6000'"), Some(("port".into(), "6000".into())));
        assert_eq!(setting("Port=6000 # mine"), Some(("port".into(), "6000".into())));
        assert_eq!(setting("a 'it''s # x' # c"), Some(("a".into(), "it's # x".into())));
        assert_eq!(setting("a = 'b\\'c'"), Some(("a".into(), "b'c".into())));
        assert_eq!(setting("# a = 1"), None);
    }

    #[test]
    fn a_block_ends_at_a_blank_line_or_comment() {
        let text = "# added by tidewal restore\nport = 5433\n\nport = 5999\n# tidewal fork: x\narchive_mode = off\n# mine\narchive_mode = on\n";
        let c = clean(text);
        assert!(disabled(&c, "port = 5433") && kept(&c, "port = 5999"), "{}", c.text);
        assert!(disabled(&c, "archive_mode = off") && kept(&c, "archive_mode = on"), "{}", c.text);
    }

    #[test]
    fn recovery_settings_go_from_postgresql_conf_but_the_users_port_stays() {
        let conf = "port = 5432\t\t\t\t# (change requires restart)\n\
                    #restore_command = ''\t\t# command to use\n\
                    restore_command = 'cp /mnt/archive/%f %p'\n\
                    primary_conninfo = 'host=db1 password=a#b'\n\
                    primary_slot_name = 'standby1'\n\
                    recovery_target_timeline = 'latest'\n\
                    archive_mode = on\n\
                    max_connections = 100\n";
        let c = clean(conf);
        for l in ["port = 5432\t\t\t\t# (change requires restart)", "archive_mode = on", "max_connections = 100"] {
            assert!(kept(&c, l), "{l:?} should stay:\n{}", c.text);
        }
        // PostgreSQL's own commented-out defaults are left alone.
        assert!(kept(&c, "#restore_command = ''\t\t# command to use"));
        assert!(disabled(&c, "primary_conninfo = 'host=db1 password=a#b'"), "{}", c.text);
        assert_eq!(c.removed, ["restore_command", "primary_conninfo", "primary_slot_name", "recovery_target_timeline"]);
    }

    #[test]
    fn every_form_postgresql_accepts_is_recognised() {
        for line in [
            "recovery_target = 'immediate'",
            "recovery_target='immediate'",
            "recovery_target 'immediate'",
            "Recovery_Target_Time = '2026-01-01 00:00:00+00'",
            "  RECOVERY_TARGET_LSN\t=\t'0/3000000'",
            "restore_command = 'echo ''#'' %f # not a comment' # a comment",
            "recovery_target_action=promote",
            "recovery_target_inclusive off",
            "primary_slot_name= s",
            "restore_command# nothing",
        ] {
            let c = clean(line);
            assert_eq!(c.removed.len(), 1, "{line:?} should be removed: {c:?}");
            assert_eq!(c.text, format!("{REMOVED}{}", line.trim_start()));
        }
    }

    #[test]
    fn names_that_only_begin_alike_are_not_ours() {
        for line in [
            "restore_command_x = 'a'",
            "restore_commands = 'a'",
            "recovery_targets = 'a'",
            "recovery_target_times = 'a'",
            "primary_conninfo_extra = 'a'",
            "myrestore_command = 'a'",
            "my.restore_command = 'a'",
            "restore_command-x = 'a'",
            "# restore_command = 'a'",
            "port = 5433",
            "archive_mode = off",
            "include 'recovery.conf'",
        ] {
            let c = clean(line);
            assert!(c.removed.is_empty(), "{line:?} is not a recovery setting: {c:?}");
            assert_eq!(c.text, line);
        }
    }

    #[test]
    fn text_without_inherited_settings_is_unchanged() {
        for text in ["", "\n", "a = 1\nb = 2", "a = 1\r\nb = 2\r\n", "# only comments\n\n"] {
            let c = clean(text);
            assert_eq!(c.text, text);
            assert!(c.removed.is_empty());
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(block("a copy", &["x = 1".into()], &[]), format!("{MARKER}: a copy\nx = 1\n{ADDED} = ''\n\n"));
        let b = block("a fork", &[], &[("port", "1".into()), ("archive_mode", "off".into())]);
        assert_eq!(b, format!("{MARKER}: a fork\n{ADDED} = 'port=1,archive_mode=off'\n\n"));
    }

    proptest::proptest! {
        /// Cleaning never drops a line and never touches one that sets nothing of ours.
        #[test]
        fn cleaning_keeps_every_line(lines in proptest::collection::vec("[a-z_# =']{0,30}", 0..20)) {
            let text = lines.join("\n");
            let c = clean(&text);
            proptest::prop_assert_eq!(c.text.split('\n').count(), text.split('\n').count());
            for (before, after) in text.split('\n').zip(c.text.split('\n')) {
                let disabled = format!("{REMOVED}{}", before.trim());
                proptest::prop_assert!(after == before || after == disabled, "{:?} became {:?}", before, after);
            }
        }
    }
}
