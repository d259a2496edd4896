//! What the server keeps in the database, one file per kind of record.

pub mod audit;
pub mod clients;
pub mod codes;
pub mod consents;
pub mod issuer;
pub mod key_settings;
pub mod logouts;
pub mod refresh;
pub mod retention;
pub mod revocation;
pub mod sessions;
pub mod users;

use std::collections::BTreeSet;

use crate::Error;

/// How far apart instances' clocks may be, in seconds (docs/server.md
/// asks for clocks within 2 s of each other and of the database).
pub const CLOCK_SPREAD: i64 = 2;

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    tessera_jose::NumericDate::now().seconds()
}

/// Whole seconds of `d`, saturating: durations from the configuration
/// against the integer seconds the database keeps.
pub fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Rows as one JSON array, for a SQLite write of many rows through
/// `json_each` (see `crate::db`: such writes keep one statement text
/// whatever the number of rows).
pub(crate) fn json_rows<T: serde::Serialize>(rows: &T) -> Result<String, Error> {
    serde_json::to_string(rows).map_err(|e| Error::Database(format!("rows as JSON: {e}")))
}

/// The id of the transaction an addition runs in, read inside it on
/// PostgreSQL (`SELECT txid_current()`; none on SQLite): [`added_after_all`]
/// asks the database by it what became of the transaction.
macro_rules! transaction_id {
    ($db:expr, $tx:expr) => {
        match $db {
            $crate::db::Db::Postgres(_) => Some(
                sqlx::query_scalar::<_, i64>("SELECT txid_current()")
                    .fetch_one($tx)
                    .await?,
            ),
            $crate::db::Db::Sqlite { .. } => None,
        }
    };
}
pub(crate) use transaction_id;

/// How long [`added_after_all`] waits for PostgreSQL to end a transaction
/// whose connection was cut: one that was waiting for its client is ended
/// by `idle_in_transaction_session_timeout` at the latest.
const OUTCOME_WAIT: std::time::Duration =
    crate::db::POSTGRES_IDLE_IN_TRANSACTION.saturating_add(std::time::Duration::from_secs(2));

/// What to answer for an addition that failed with `failed`. The database
/// out of reach may be the answer to `COMMIT` lost on its way back (a
/// connection cut), the row added all the same: answered as a failure, a
/// retry would add a second one (a client whose first secret no one has)
/// or find the name taken. So after a transient failure the database is
/// asked again, on another connection. On PostgreSQL, about the
/// transaction `xid` ([`transaction_id!`]; `None`: the failure came before
/// it had one, so no `COMMIT` was sent): committed and its row there
/// (found by `count`, `SELECT COUNT(*) … WHERE id = $1`), the addition is
/// answered as made; rolled back, `failed` stands; still in progress, or
/// committed but its row not seen yet (a commit waiting for a synchronous
/// standby, or a transaction whose cut the database has not noticed yet),
/// it is asked again for up to [`OUTCOME_WAIT`]. On SQLite,
/// whose connections are in this process, `count` finds the row by the
/// `id` it was given. If the answer
/// cannot be had, `failed` says that whether `what` was added is not
/// known. Other failures stay what they are.
pub(crate) async fn added_after_all(
    db: &crate::db::Db,
    failed: Error,
    xid: Option<i64>,
    count: &'static str,
    id: &str,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    if !failed.is_transient() {
        return Err(failed);
    }
    let made = match db.read() {
        crate::db::Pool::Postgres(p) => {
            let Some(xid) = xid else {
                return Err(failed);
            };
            let deadline = std::time::Instant::now() + OUTCOME_WAIT;
            loop {
                let status = sqlx::query_scalar::<_, Option<String>>("SELECT txid_status($1)")
                    .bind(xid)
                    .fetch_one(p)
                    .await;
                let outcome = match status.as_ref().map(|s| s.as_deref()) {
                    // Its row is looked for too: a commit still waiting
                    // for a synchronous standby is marked committed before
                    // others see it, and after a failover the new primary
                    // may have given the id to another transaction.
                    Ok(Some("committed")) => {
                        match sqlx::query_scalar::<_, i64>(count)
                            .bind(id)
                            .fetch_one(p)
                            .await
                        {
                            Ok(n) if n > 0 => Some(true),
                            Ok(_) => None,
                            Err(_) => break None,
                        }
                    }
                    Ok(Some("aborted")) => Some(false),
                    Ok(Some(_)) => None,
                    _ => break None,
                };
                if let Some(made) = outcome {
                    break Some(made);
                }
                if std::time::Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        crate::db::Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(count)
            .bind(id)
            .fetch_one(p)
            .await
            .ok()
            .map(|n| n > 0),
    };
    match made {
        Some(true) => {
            tracing::warn!(
                id,
                error = %failed,
                "an addition answered as failed was made all the same (the answer to COMMIT was \
                 lost); answered as made"
            );
            Ok(())
        }
        Some(false) => Err(failed),
        None => Err(Error::Unavailable(format!(
            "{failed}; whether {} was added is not known until the database answers again",
            what()
        ))),
    }
}

/// A set of OAuth scope tokens (RFC 6749 §3.3), kept sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parse a space-separated list, refusing characters §3.3 excludes.
    pub fn parse(text: &str) -> Result<Scopes, Error> {
        let mut set = BTreeSet::new();
        for token in text.split(' ').filter(|t| !t.is_empty()) {
            if !token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(Error::Invalid(format!("invalid scope {token:?}")));
            }
            set.insert(token.to_owned());
        }
        Ok(Scopes(set))
    }

    /// Parse each item of a list (as given on a command line, or a JSON
    /// array): each must be one scope. An empty item, or one holding a
    /// space, is refused rather than read as none or as several (`[""]`
    /// would have cleared every scope).
    pub fn from_list<S: AsRef<str>>(items: &[S]) -> Result<Scopes, Error> {
        if let Some(bad) = items
            .iter()
            .map(AsRef::as_ref)
            .find(|item| item.is_empty() || item.contains(' '))
        {
            return Err(Error::Invalid(format!(
                "invalid scope {bad:?}: give each scope as an item of its own"
            )));
        }
        Scopes::parse(
            &items
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// Whether every scope of `self` is in `allowed`.
    pub fn is_subset(&self, allowed: &Scopes) -> bool {
        self.0.is_subset(&allowed.0)
    }

    /// The scopes in both.
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.intersection(&other.0).cloned().collect())
    }

    /// The scopes in either.
    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.union(&other.0).cloned().collect())
    }

    /// The set without `scope`.
    pub fn without(&self, scope: &str) -> Scopes {
        let mut set = self.0.clone();
        set.remove(scope);
        Scopes(set)
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A change to the scopes of a user or a client: all of them in place of
/// the old, or some added and some taken away. An edit is made against
/// the scopes as the transaction that writes it reads them (the row held
/// on PostgreSQL; SQLite's one writer runs changes one after the other):
/// two administrators adding a scope each at the same moment both land,
/// where two replacements each written from what it read before would
/// lose one, and one forgotten in a replacement would be taken away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeChange {
    /// These scopes, in place of the old.
    Replace(Scopes),
    /// The old scopes with `add`, without `remove`.
    Edit {
        /// Scopes added.
        add: Scopes,
        /// Scopes taken away.
        remove: Scopes,
    },
}

impl ScopeChange {
    /// From the lists an administrator gave: `replace` (all the scopes),
    /// or `add` and `remove`; not both kinds, and not a scope both added
    /// and taken away.
    pub fn of_lists<S: AsRef<str>>(
        replace: Option<&[S]>,
        add: &[S],
        remove: &[S],
    ) -> Result<ScopeChange, Error> {
        match replace {
            Some(_) if !add.is_empty() || !remove.is_empty() => Err(Error::Invalid(
                "give the scopes in full, or the ones to add and take away, not both".into(),
            )),
            Some(all) => Ok(ScopeChange::Replace(Scopes::from_list(all)?)),
            None => {
                let (add, remove) = (Scopes::from_list(add)?, Scopes::from_list(remove)?);
                if add.is_empty() && remove.is_empty() {
                    return Err(Error::Invalid("name a scope to add or to take away".into()));
                }
                if let Some(both) = add.iter().find(|s| remove.contains(s)) {
                    return Err(Error::Invalid(format!(
                        "scope {both:?} is both added and taken away"
                    )));
                }
                Ok(ScopeChange::Edit { add, remove })
            }
        }
    }

    /// The scopes after the change, from the `old` ones as stored, and
    /// whether it takes any away. Stored scopes that cannot be read are
    /// replaced whole (all of them taken away), never edited.
    pub fn applied_to(&self, old: &str) -> Result<(Scopes, bool), Error> {
        let old = Scopes::parse(old);
        let new = match (self, &old) {
            (ScopeChange::Replace(new), _) => new.clone(),
            (ScopeChange::Edit { add, remove }, Ok(old)) => {
                Scopes(old.union(add).0.difference(&remove.0).cloned().collect())
            }
            (ScopeChange::Edit { .. }, Err(e)) => {
                return Err(Error::Invalid(format!(
                    "the stored scopes cannot be read ({e}): give them in full"
                )))
            }
        };
        let taken_away = old
            .as_ref()
            .map_or(true, |old| old.iter().any(|s| !new.contains(s)));
        Ok((new, taken_away))
    }

    /// Whether the change can give `scope`.
    pub fn may_give(&self, scope: &str) -> bool {
        match self {
            ScopeChange::Replace(new) => new.contains(scope),
            ScopeChange::Edit { add, .. } => add.contains(scope),
        }
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

/// Refuse a name people type (a username, an audience) that is empty,
/// longer than 200 bytes, starts or ends with white space, holds a
/// character that is not seen as written (controls, format characters
/// such as zero-width spaces and the bidirectional overrides that show a
/// client's name reversed on the consent page, line and paragraph
/// separators, private-use and unassigned code points), is not in Unicode
/// normalization form C, or holds compatibility characters (it changes
/// under NFKC): names are compared byte for byte, and `alice `, an `é`
/// written as `e` + accent or a full-width `ａｌｉｃｅ` would otherwise be
/// another user than the one they look like.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), Error> {
    // Names go into URL paths (`/admin/users/{name}`), where these two
    // are the path's own steps, not a segment.
    if matches!(name, "." | "..") {
        return Err(Error::Invalid(format!("{kind} {name:?} is not a name")));
    }
    check_text(kind, name, false)?;
    // Typed, not only read: the compatibility forms that look like plain
    // letters or spaces (full-width `ａｌｉｃｅ`, the ligature `ﬁ`,
    // mathematical bold letters, a no-break or ideographic space,
    // superscript digits) would make a second `alice` (RFC 8265 maps or
    // refuses them in usernames). Such a name is refused with the plain
    // form to write instead.
    use unicode_normalization::UnicodeNormalization;
    if !name.nfkc().eq(name.chars()) {
        let plain: String = name.nfkc().collect();
        return Err(Error::Invalid(format!(
            "{kind} holds compatibility characters that look like others \
             (full-width letters, ligatures, styled letters, special spaces): write it {plain:?}"
        )));
    }
    Ok(())
}

/// [`check_name`] for a name people read rather than type to sign in (a
/// person's or a client's name): compatibility characters are kept as
/// written, and the zero-width joiner and non-joiner
/// (U+200D, U+200C), which Persian spelling and emoji sequences need, are
/// allowed between two other characters.
pub(crate) fn check_display_name(kind: &str, name: &str) -> Result<(), Error> {
    check_text(kind, name, true)
}

fn check_text(kind: &str, name: &str, joiners: bool) -> Result<(), Error> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
    let joiner = |c: char| joiners && matches!(c, '\u{200C}' | '\u{200D}');
    let invisible = |c: char| {
        (c.general_category_group() == GeneralCategoryGroup::Other && !joiner(c))
            || matches!(
                c.general_category(),
                GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
            )
    };
    if name.is_empty() || name.len() > 200 {
        return Err(Error::Invalid(format!("{kind} must be 1 to 200 bytes")));
    }
    if name.trim() != name || name.starts_with(joiner) || name.ends_with(joiner) {
        return Err(Error::Invalid(format!(
            "{kind} must not start or end with white space"
        )));
    }
    if let Some(c) = name.chars().find(|&c| invisible(c)) {
        return Err(Error::Invalid(format!(
            "{kind} holds U+{:04X}, a character that is not shown as written (a control, \
             format, separator, private-use or unassigned code point)",
            u32::from(c)
        )));
    }
    if !name.nfc().eq(name.chars()) {
        return Err(Error::Invalid(format!(
            "{kind} is not in Unicode normalization form C: write it composed (NFC)"
        )));
    }
    Ok(())
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::{check_name, ScopeChange, Scopes};

    #[test]
    fn a_scope_change_is_whole_or_an_edit_and_says_what_it_takes_away() {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let edit = ScopeChange::of_lists(None, &list(&["c"]), &list(&["a"])).unwrap();
        assert_eq!(
            edit.applied_to("a b").unwrap(),
            (Scopes::parse("b c").unwrap(), true)
        );
        let add = ScopeChange::of_lists(None, &list(&["c"]), &[]).unwrap();
        assert_eq!(
            add.applied_to("a b").unwrap(),
            (Scopes::parse("a b c").unwrap(), false)
        );
        let whole = ScopeChange::of_lists(Some(&list(&["a", "b"])), &[], &[]).unwrap();
        assert_eq!(
            whole.applied_to("b").unwrap(),
            (Scopes::parse("a b").unwrap(), false)
        );
        // Scopes stored unreadable: replaced whole (all taken away), never
        // edited.
        assert_eq!(
            whole.applied_to("a \"b").unwrap(),
            (Scopes::parse("a b").unwrap(), true)
        );
        assert!(add.applied_to("a \"b").is_err());
        // Refused: both kinds, a scope both given and taken, an edit of
        // nothing (an empty name included).
        assert!(ScopeChange::of_lists(Some(&list(&["a"])), &list(&["b"]), &[]).is_err());
        assert!(ScopeChange::of_lists(None, &list(&["a"]), &list(&["a"])).is_err());
        assert!(ScopeChange::of_lists(None, &list(&[""]), &[]).is_err());
        assert!(ScopeChange::of_lists::<String>(None, &[], &[]).is_err());
        assert!(whole.may_give("a") && !add.may_give("a") && add.may_give("c"));
    }

    #[test]
    fn names_are_shown_as_written_and_compared_as_shown() {
        for good in [
            "alice",
            "Alice Liddell",
            "Zoë Ångström",
            "山田 太郎",
            "Example Shop <script>alert(1)</script>",
        ] {
            assert!(check_name("name", good).is_ok(), "{good:?}");
        }
        // Compatibility forms: a second `alice` to type, refused in names
        // people sign in with, shown as written in people's names.
        for lookalike in [
            "a\u{00A0}b",
            "ａｌｉｃｅ",
            "\u{FB01}ona",
            "\u{1D41A}dmin",
            "x\u{00B2}",
            "山田\u{3000}太郎",
        ] {
            let refused = check_name("username", lookalike).unwrap_err().to_string();
            assert!(
                refused.contains("compatibility"),
                "{lookalike:?}: {refused}"
            );
            assert!(
                super::check_display_name("name", lookalike).is_ok(),
                "{lookalike:?}"
            );
        }
        for bad in [
            "",
            " alice",
            "alice ",
            "alice\t",
            "ali\u{0007}ce",
            "ali\u{200B}ce",
            "\u{FEFF}alice",
            "Shop\u{202E}gnp.exe",
            "Shop\u{2066}x\u{2069}",
            "line\u{2028}two",
            "private\u{E000}",
            // `é` as `e` and a combining accent: NFD, not NFC.
            "Zoe\u{0301}",
            // A URL path's own steps.
            ".",
            "..",
        ] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        // Joiners: in names people read, between two characters.
        let persian = "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}";
        assert!(super::check_display_name("name", persian).is_ok());
        assert!(check_name("username", persian).is_err());
        assert!(super::check_display_name("name", "\u{200D}x").is_err());
        assert!(check_name("name", &"a".repeat(200)).is_ok());
        assert!(check_name("name", &"a".repeat(201)).is_err());
    }

    #[test]
    fn scopes_follow_rfc_6749_section_3_3() {
        let s = Scopes::parse("read  write read").unwrap();
        assert_eq!(s.to_string(), "read write");
        assert!(Scopes::parse("read\"").is_err());
        assert!(Scopes::parse("a\\b").is_err());
        assert!(Scopes::parse("caf\u{e9}").is_err());
        assert!(Scopes::parse("").unwrap().is_empty());
        let allowed = Scopes::parse("read write admin").unwrap();
        assert!(s.is_subset(&allowed));
        assert!(!Scopes::parse("delete").unwrap().is_subset(&allowed));
    }

    #[test]
    fn a_list_holds_one_scope_per_item() {
        assert_eq!(
            Scopes::from_list(&["read", "write", "read"])
                .unwrap()
                .to_string(),
            "read write"
        );
        assert!(Scopes::from_list::<&str>(&[]).unwrap().is_empty());
        for bad in [&[""][..], &["read write"], &["read", ""], &[" read"]] {
            let err = Scopes::from_list(bad).unwrap_err().to_string();
            assert!(err.contains("item of its own"), "{bad:?}: {err}");
        }
    }
}
