use icu_casemap::CaseMapper;
use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};
use icu_properties::props::{EastAsianWidth, GeneralCategory};
use icu_properties::CodePointMapData;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} must not contain control characters")]
    ControlCharacter { what: &'static str },
    #[error(
        "{what} contains the invisible format character U+{code_point:04X}; remove it \
         (format characters such as zero-width spaces and joiners, bidi controls and soft \
         hyphens make two different names look alike, so they are refused)"
    )]
    FormatCharacter { what: &'static str, code_point: u32 },
    #[error("role {0:?} must be lowercase letters, digits, '_' or '-'")]
    BadRole(String),
}

const MAX_NAME_LEN: usize = 256;

fn parse_name(raw: &str, what: &'static str) -> Result<String, NameError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty { what });
    }
    let len = trimmed.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            len,
            max: MAX_NAME_LEN,
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter { what });
    }
    Ok(trimmed.to_owned())
}

/// Which rules [`fold_identifier`] applies. The store records the version its
/// `user_name_folded` column was computed with and re-folds every row at start when it
/// differs, so bump it whenever the folding can give a different answer for some input
/// (a new rule, or an ICU4X upgrade whose Unicode data changes a mapping).
/// Version 1 was `str::to_lowercase` alone.
pub const FOLD_VERSION: i64 = 2;

/// The one comparison form of userNames and emails, in the spirit of RFC 8265's
/// UsernameCaseMapped profile: fullwidth and halfwidth forms mapped to their ordinary
/// counterparts, NFC, then Unicode default case folding (so `JOSÉ` typed with a combining
/// accent, `ｊｏｓé` and `josé` are one name, as are `STRASSE` and `straße`).
///
/// It refuses nothing and does not trim: emails are matched with it as they come, and
/// [`UserName::parse`] does the refusing (format characters) before folding.
pub fn fold_identifier(raw: &str) -> String {
    let normaliser = ComposingNormalizerBorrowed::new_nfc();
    let composed = normaliser.normalize(&map_width(raw)).into_owned();
    let folded = CaseMapper::new().fold_string(&composed);
    // Folding can leave a sequence NFC would compose (ΐ folds to ι + two combining
    // marks); composing again makes the result NFC, hence stable when folded again.
    normaliser.normalize(&folded).into_owned()
}

/// RFC 8264's width mapping: fullwidth and halfwidth characters (East_Asian_Width F or
/// H, whose compatibility decompositions are `<wide>`/`<narrow>`) replaced by their
/// compatibility decomposition, every other character left alone. ICU4X does not expose
/// the one-step decomposition mapping, so these take the full NFKD; that differs only
/// for halfwidth Hangul jamo and U+FFE3, which decompose one step further (to conjoining
/// jamo, and to a space with a combining macron), still one folded form per input.
fn map_width(raw: &str) -> Cow<'_, str> {
    let width = CodePointMapData::<EastAsianWidth>::new();
    let is_wide_or_narrow = |c: char| {
        matches!(
            width.get(c),
            EastAsianWidth::Fullwidth | EastAsianWidth::Halfwidth
        )
    };
    if !raw.chars().any(is_wide_or_narrow) {
        return Cow::Borrowed(raw);
    }
    let compatibility = DecomposingNormalizerBorrowed::new_nfkd();
    let mut mapped = String::with_capacity(raw.len());
    let mut one = [0u8; 4];
    for c in raw.chars() {
        if is_wide_or_narrow(c) {
            mapped.push_str(&compatibility.normalize(c.encode_utf8(&mut one)));
        } else {
            mapped.push(c);
        }
    }
    Cow::Owned(mapped)
}

/// The first character of general category Cf (format), if any. These are invisible
/// (U+200B zero width space, U+200D zero width joiner, U+2060 word joiner, U+FEFF, the
/// bidi controls such as U+202E, U+00AD soft hyphen, ...): a name holding one looks
/// exactly like a name without it, so two accounts could pass for one person.
pub fn first_format_character(raw: &str) -> Option<char> {
    let category = CodePointMapData::<GeneralCategory>::new();
    raw.chars()
        .find(|&c| category.get(c) == GeneralCategory::Format)
}

/// A user's login name. Compared, hashed and ordered by [`fold_identifier`] (SCIM's
/// userName has caseExact=false, and IdPs differ in how they case, compose and widen
/// it), displayed as it was given. Names holding invisible format characters are refused.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName {
    original: String,
    folded: String,
}

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let trimmed = parse_name(raw, "userName")?;
        if let Some(c) = first_format_character(&trimmed) {
            return Err(NameError::FormatCharacter {
                what: "userName",
                code_point: u32::from(c),
            });
        }
        // The original is kept as given except for NFC, which changes no visible glyph:
        // the IdP that sends a decomposed `é` (macOS input does) and the one that sends
        // it precomposed then store and return the same text, so a change of encoding
        // never shows up as a rename. Width and case are the person's and are kept.
        let original = ComposingNormalizerBorrowed::new_nfc()
            .normalize(&trimmed)
            .into_owned();
        let folded = fold_identifier(&original);
        Ok(Self { original, folded })
    }

    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The [`fold_identifier`] form, which is what the store's unique index holds.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl TryFrom<String> for UserName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserName> for String {
    fn from(value: UserName) -> Self {
        value.original
    }
}

impl PartialEq for UserName {
    fn eq(&self, other: &Self) -> bool {
        self.folded == other.folded
    }
}
impl Eq for UserName {}
impl Hash for UserName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.hash(state)
    }
}
impl PartialOrd for UserName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for UserName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.folded.cmp(&other.folded)
    }
}
impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}
impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.original, f)
    }
}

/// A team's display name: trimmed, non-empty, bounded. Case is kept and matters
/// for display; matching by name is done case-insensitively by the callers that need it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TeamName(String);

impl TeamName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        parse_name(raw, "displayName").map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for TeamName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<TeamName> for String {
    fn from(value: TeamName) -> Self {
        value.0
    }
}
impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A gateway role such as `viewer` or `admin`. Roles are configuration, not an
/// enum: gateways name them differently (LiteLLM: `internal_user`, `proxy_admin`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(NameError::BadRole(raw.to_owned()))
        }
    }
    pub fn viewer() -> Self {
        Self("viewer".to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Role {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Role> for String {
    fn from(value: Role) -> Self {
        value.0
    }
}
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_compare_case_insensitively_but_display_as_given() {
        let a = UserName::parse("Alice@Example.com").unwrap();
        let b = UserName::parse("alice@example.COM").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "Alice@Example.com");
        assert_eq!(a.folded(), "alice@example.com");
    }

    #[test]
    fn user_names_are_trimmed_and_must_not_be_empty() {
        assert_eq!(UserName::parse("  bob ").unwrap().as_str(), "bob");
        assert!(matches!(
            UserName::parse("   "),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            UserName::parse("a\u{0}b"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(matches!(
            UserName::parse(&"x".repeat(300)),
            Err(NameError::TooLong { .. })
        ));
    }

    fn name(raw: &str) -> UserName {
        match UserName::parse(raw) {
            Ok(n) => n,
            Err(e) => panic!("{raw:?} should parse: {e}"),
        }
    }

    #[test]
    fn precomposed_and_decomposed_accents_are_one_user_name() {
        let nfc = name("jos\u{e9}@example.com");
        let nfd = name("jose\u{301}@example.com");
        assert_eq!(nfc, nfd);
        assert_eq!(nfd.folded(), "jos\u{e9}@example.com");
        // The display keeps the spelling, composed: no visible difference, one encoding.
        assert_eq!(nfd.as_str(), "jos\u{e9}@example.com");
        assert_eq!(name("JOSE\u{301}@EXAMPLE.COM"), nfc);
    }

    #[test]
    fn fullwidth_and_halfwidth_forms_fold_to_their_ordinary_letters() {
        let fullwidth = name("\u{ff4a}\u{ff4f}\u{ff53}\u{e9}@example.com");
        assert_eq!(fullwidth, name("jos\u{e9}@example.com"));
        assert_eq!(
            fullwidth.as_str(),
            "\u{ff4a}\u{ff4f}\u{ff53}\u{e9}@example.com"
        );
        assert_eq!(
            name("\u{ff21}\u{ff2c}\u{ff29}\u{ff23}\u{ff25}"),
            name("alice")
        );
        // Fullwidth digits and punctuation (U+FF01..U+FF5E) too.
        assert_eq!(fold_identifier("\u{ff11}\u{ff20}\u{ff0e}"), "1@.");
        // Halfwidth katakana with a halfwidth voiced mark becomes the one composed kana.
        assert_eq!(fold_identifier("\u{ff76}\u{ff9e}"), "\u{30ac}");
        // Wide but not fullwidth (ordinary CJK) is left alone.
        assert_eq!(fold_identifier("\u{30a2}\u{5c71}"), "\u{30a2}\u{5c71}");
    }

    #[test]
    fn case_folding_covers_non_ascii_letters() {
        assert_eq!(name("stra\u{df}e"), name("STRASSE"));
        assert_eq!(name("STRA\u{1e9e}E"), name("strasse"));
        assert_eq!(
            name("\u{3a3}\u{39f}\u{3a6}\u{399}\u{391}"),
            name("\u{3c3}\u{3bf}\u{3c6}\u{3b9}\u{3b1}")
        );
        // Final sigma is the same letter as sigma.
        assert_eq!(
            name("\u{3c3}\u{3bf}\u{3c6}\u{3bf}\u{3c2}"),
            name("\u{3a3}\u{39f}\u{3a6}\u{39f}\u{3a3}")
        );
        assert_eq!(name("\u{c9}MILE"), name("\u{e9}mile"));
    }

    #[test]
    fn turkish_dotted_and_dotless_i_stay_distinct_and_stable() {
        let dotted_capital = name("\u{130}lker");
        // Default (not Turkic) folding: İ is i with a combining dot, not plain i.
        assert_eq!(dotted_capital.folded(), "i\u{307}lker");
        assert_ne!(dotted_capital, name("ilker"));
        assert_ne!(dotted_capital, name("Ilker"));
        // Its decomposed spelling is the same name.
        assert_eq!(dotted_capital, name("I\u{307}lker"));
        // Dotless ı is its own letter, and I folds to i.
        assert_ne!(name("\u{131}lker"), name("ilker"));
        assert_eq!(name("ILKER"), name("ilker"));
        assert_eq!(
            fold_identifier(dotted_capital.folded()),
            dotted_capital.folded()
        );
    }

    #[test]
    fn every_invisible_format_character_is_refused_by_name() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{202A}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{200E}',
            '\u{00AD}',
            '\u{061C}',
            '\u{E0041}',
        ] {
            let raw = format!("jo{c}se@example.com");
            match UserName::parse(&raw) {
                Err(e @ NameError::FormatCharacter { .. }) => {
                    let code = format!("U+{:04X}", u32::from(c));
                    let text = e.to_string();
                    assert!(
                        text.starts_with(&format!(
                            "userName contains the invisible format character {code};"
                        )),
                        "{text}"
                    );
                }
                other => panic!("U+{:04X} should be refused, got {other:?}", u32::from(c)),
            }
        }
        // A format character at either end is refused too, not trimmed away silently.
        assert!(UserName::parse("\u{FEFF}alice").is_err());
        // A visible non-ASCII name is fine.
        assert!(UserName::parse("\u{1f600}@example.com").is_ok());
    }

    #[test]
    fn emails_fold_the_same_way_without_being_refused() {
        assert_eq!(
            fold_identifier("JOSE\u{301}@EXAMPLE.COM"),
            fold_identifier("jos\u{e9}@example.com")
        );
        // Matching an email never refuses it; only a userName is refused.
        assert_eq!(fold_identifier("a\u{200B}b"), "a\u{200B}b");
    }

    proptest::proptest! {
        #[test]
        fn folding_is_idempotent(raw in "\\PC{0,24}") {
            let once = fold_identifier(&raw);
            proptest::prop_assert_eq!(fold_identifier(&once), once);
        }

        // The corners of case folding: Greek with iota subscripts and tonos, ligatures,
        // ß/ẞ, dotted/dotless i, combining marks in any order.
        #[test]
        fn folding_is_idempotent_where_folding_and_composition_meet(
            raw in "[\u{370}-\u{3ff}\u{1f00}-\u{1fff}\u{300}-\u{36f}\u{fb00}-\u{fb06}\u{df}\u{1e9e}\u{130}\u{131}Iis]{0,16}"
        ) {
            let once = fold_identifier(&raw);
            proptest::prop_assert_eq!(fold_identifier(&once), once);
            let nfd = DecomposingNormalizerBorrowed::new_nfd().normalize(&raw).into_owned();
            proptest::prop_assert_eq!(fold_identifier(&nfd), fold_identifier(&raw));
        }

        #[test]
        fn nfc_and_nfd_spellings_fold_the_same(raw in "\\PC{0,24}") {
            let nfc = ComposingNormalizerBorrowed::new_nfc().normalize(&raw).into_owned();
            let nfd = DecomposingNormalizerBorrowed::new_nfd().normalize(&raw).into_owned();
            proptest::prop_assert_eq!(fold_identifier(&nfc), fold_identifier(&nfd));
        }

        #[test]
        fn parsed_user_names_compare_by_their_fold(raw in "[a-zA-Z\u{c0}-\u{17f}\u{ff21}-\u{ff5a}\u{300}-\u{36f}@.]{1,24}") {
            let decomposed = DecomposingNormalizerBorrowed::new_nfd().normalize(&raw).into_owned();
            if let (Ok(a), Ok(b)) = (UserName::parse(&raw), UserName::parse(&decomposed.to_uppercase())) {
                proptest::prop_assert_eq!(a.folded(), fold_identifier(a.as_str()));
                proptest::prop_assert_eq!(fold_identifier(b.as_str()), b.folded());
            }
        }
    }

    #[test]
    fn roles_are_lowercase_identifiers() {
        assert!(Role::parse("internal_user").is_ok());
        assert!(Role::parse("Admin").is_err());
        assert!(Role::parse("").is_err());
        assert!(Role::parse("a b").is_err());
    }
}
