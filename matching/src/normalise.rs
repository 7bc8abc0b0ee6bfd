//! Normalisation: the same value written by two agencies should come out the same. Names lose
//! case, accents and punctuation and split into tokens; given names also map to a canonical form
//! through a table of English nicknames and short forms; dates of birth, sex codes and UK
//! postcodes are parsed from every shape the sources write them in; addresses lose the usual
//! abbreviations.

use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Folds text for comparison: accents stripped (é → e), lower case, apostrophes removed
/// (O'Brien → obrien), every other non-alphanumeric character a single space, trimmed.
pub fn fold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    for c in raw.nfkd() {
        if is_combining_mark(c) || matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{b4}') {
            continue;
        }
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        } else {
            space = true;
        }
    }
    out
}

/// A person's name (given or family) as tokens. Hyphenated and multiple names become several
/// tokens, so "Mary-Jane" and "Mary Jane" agree, and "Smith-Jones" partly agrees with "Jones".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Name {
    /// The folded tokens in order, e.g. `["mary", "jane"]`.
    pub tokens: Vec<String>,
    /// The tokens joined without spaces: the form exact agreement and similarity use, so that
    /// "McDonald" and "Mc Donald" agree.
    pub joined: String,
}

impl Name {
    /// `None` when nothing is left after folding: an empty value is missing, not a disagreement.
    pub fn parse(raw: &str) -> Option<Self> {
        let folded = fold(raw);
        let tokens: Vec<String> = folded
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        if tokens.is_empty() {
            return None;
        }
        let joined = tokens.concat();
        Some(Self { tokens, joined })
    }

    /// The first token: for given names, the one a record is usually known by.
    pub fn first(&self) -> &str {
        self.tokens.first().map(String::as_str).unwrap_or("")
    }

    pub fn initial(&self) -> Option<char> {
        self.joined.chars().next()
    }
}

/// Groups of English given names that are the same person's name: formal names with their
/// nicknames and short forms. A name may sit in several groups (Alex → Alexander, Alexandra).
const NICKNAMES: &[&[&str]] = &[
    &[
        "william", "will", "bill", "billy", "willy", "willie", "liam", "wills", "wil",
    ],
    &[
        "elizabeth",
        "elisabeth",
        "beth",
        "liz",
        "lizzie",
        "lizzy",
        "eliza",
        "betty",
        "bess",
        "bessie",
        "libby",
        "elsie",
        "lisa",
        "betsy",
        "liza",
    ],
    &["robert", "rob", "robbie", "bob", "bobby", "bert", "robin"],
    &[
        "richard", "rich", "richie", "rick", "ricky", "dick", "dickie",
    ],
    &["james", "jim", "jimmy", "jamie", "jem"],
    &["john", "jon", "johnny", "jack", "jonny"],
    &["jonathan", "jon", "jonny", "johnny", "nathan"],
    &["joseph", "joe", "joey", "jo"],
    &["josephine", "jo", "josie", "jose"],
    &["thomas", "tom", "tommy", "thom"],
    &[
        "michael", "mike", "mikey", "mick", "micky", "mickey", "mich",
    ],
    &["christopher", "chris", "kit", "topher", "christy"],
    &[
        "christine",
        "chris",
        "chrissie",
        "christina",
        "tina",
        "kirsty",
        "kristy",
    ],
    &["daniel", "dan", "danny"],
    &["matthew", "matt", "matty"],
    &["anthony", "tony", "ant", "antony"],
    &["andrew", "andy", "drew"],
    &[
        "alexander",
        "alex",
        "alec",
        "sandy",
        "xander",
        "lex",
        "alexandre",
    ],
    &[
        "alexandra",
        "alex",
        "lexi",
        "lexie",
        "sandra",
        "sandy",
        "alexa",
        "sasha",
    ],
    &["benjamin", "ben", "benny", "benji"],
    &["edward", "ed", "eddie", "eddy", "ted", "teddy", "ned"],
    &["edmund", "ed", "eddie", "ned"],
    &["charles", "charlie", "chas", "chuck", "chaz"],
    &["charlotte", "charlie", "lottie", "lotte", "char"],
    &["henry", "harry", "hal", "hank"],
    &["harold", "harry", "hal"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammy", "sammie"],
    &["nicholas", "nick", "nicky", "nico", "nicolas"],
    &["nicola", "nicky", "nikki", "nicole"],
    &["stephen", "steve", "stevie", "steven", "stefan"],
    &["patrick", "pat", "paddy"],
    &["patricia", "pat", "patty", "trish", "tricia"],
    &["peter", "pete"],
    &["david", "dave", "davy", "davie"],
    &["timothy", "tim", "timmy"],
    &["frederick", "fred", "freddie", "freddy"],
    &["gregory", "greg"],
    &["jacob", "jake"],
    &["joshua", "josh"],
    &["lawrence", "laurence", "larry", "laurie"],
    &["leonard", "leo", "len", "lenny"],
    &["nathaniel", "nathan", "nat", "nate"],
    &["oliver", "ollie", "olly"],
    &["olivia", "liv", "livvy", "ollie"],
    &["philip", "phillip", "phil", "pip"],
    &["raymond", "ray"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["kenneth", "ken", "kenny"],
    &["theodore", "theo", "ted", "teddy"],
    &["zachary", "zach", "zack", "zak"],
    &[
        "margaret", "maggie", "meg", "peggy", "madge", "marge", "margie", "greta", "molly",
        "margot", "margo",
    ],
    &["matilda", "tilly", "tillie", "tilda", "mattie"],
    &["florence", "flo", "florrie", "flossie", "floss"],
    &["harriet", "hattie", "hatty", "harri"],
    &["henrietta", "hettie", "etta", "hetty"],
    &["harrison", "harry"],
    &["imogen", "immy", "imi"],
    &["evelyn", "evie", "eve", "evelina"],
    &["evangeline", "evie", "eva"],
    &["georgia", "georgina", "georgie", "gina"],
    &["george", "georgie"],
    &["sebastian", "seb", "sebby", "bastian"],
    &["stanley", "stan"],
    &["lillian", "lilian", "lily", "lil", "lillie"],
    &["beatrice", "beatrix", "bea", "bee", "trixie"],
    &["dominic", "dom"],
    &["benedict", "ben", "benny"],
    &["elijah", "eli"],
    &["jasmine", "jas", "jaz", "jazz"],
    &["theodora", "thea"],
    &["cecilia", "cecily", "cece", "cissy", "cissie"],
    &[
        "catherine",
        "katherine",
        "kathryn",
        "cathy",
        "kathy",
        "kate",
        "katie",
        "katy",
        "kat",
        "cath",
        "kath",
        "kitty",
        "kay",
    ],
    &["rebecca", "becky", "becca", "bex"],
    &["jennifer", "jen", "jenny", "jenni"],
    &["jessica", "jess", "jessie"],
    &["victoria", "vicky", "vicki", "tori", "vic"],
    &["susan", "sue", "susie", "suzy", "suzanne"],
    &["deborah", "debra", "debbie", "deb"],
    &["abigail", "abby", "abbie", "gail"],
    &["amelia", "amy", "millie", "mia"],
    &["emily", "em", "emmy", "millie"],
    &["emma", "em", "emmy"],
    // Not Isla: a name of its own (among the commonest girls' names in England and Wales), not
    // a short form, so a twin Isla is never taken for her sister Isabella.
    &["isabella", "isabel", "isabelle", "izzy", "bella"],
    &[
        "eleanor", "elinor", "ellie", "nell", "nellie", "ella", "nora", "elly",
    ],
    &["helen", "helena", "nell", "nellie", "ellen"],
    &["mary", "molly", "polly", "mae", "may", "marie", "maria"],
    &["sarah", "sara", "sally", "sadie"],
    &["anne", "ann", "anna", "annie", "nan", "nancy", "hannah"],
    &["dorothy", "dot", "dotty", "dora"],
    &["frances", "fran", "fanny", "frankie"],
    &["francis", "frank", "frankie", "fran"],
    &["gabriel", "gabe", "gabby"],
    &["gabrielle", "gabriella", "gabby", "gabi"],
    &["jacqueline", "jackie", "jacqui"],
    &["louise", "louisa", "lou", "lulu"],
    &["louis", "lou", "lewis", "louie"],
    &["madeline", "madeleine", "maddie", "maddy", "madison"],
    &["natalie", "natasha", "nat", "tash", "tasha"],
    &["penelope", "penny", "pen"],
    &["rosemary", "rose", "rosie"],
    &["sophia", "sophie", "soph"],
    &["theresa", "teresa", "tess", "tessa", "terri"],
    &["valerie", "val"],
    &["wilfred", "wilf", "fred"],
    &["albert", "al", "bert", "bertie"],
    &["alfred", "alf", "alfie", "fred"],
    &["archibald", "archie", "archy"],
    &["arthur", "art", "artie"],
    &["cameron", "cam"],
    &["douglas", "doug", "dougie"],
    &["geoffrey", "jeffrey", "geoff", "jeff"],
    &["gerald", "gerry", "jerry", "ged"],
    &["jeremy", "jerry"],
    &["maximilian", "max", "maxwell"],
    &[
        "mohammed", "muhammad", "mohammad", "mohamed", "muhammed", "mo",
    ],
    &["reginald", "reg", "reggie"],
    &["terence", "terry", "tel"],
    &["vincent", "vince", "vinny"],
];

type Groups = HashMap<&'static str, Vec<u16>, rustc_hash::FxBuildHasher>;

/// Name → the ids of the groups it belongs to.
/// Hashed with FxHash: it is asked about every pair of given names compared, and its keys are
/// the table's, fixed, so no input can make them collide.
fn nickname_groups() -> &'static Groups {
    static GROUPS: OnceLock<Groups> = OnceLock::new();
    GROUPS.get_or_init(|| {
        let mut map = Groups::default();
        for (id, group) in NICKNAMES.iter().enumerate() {
            for name in *group {
                map.entry(name).or_default().push(id as u16);
            }
        }
        map
    })
}

/// Whether two folded given-name tokens are the same name under the nickname table
/// (William/Bill/Liam, Elizabeth/Beth/Liz, …). Identical tokens are not asked about here.
pub fn nickname_equivalent(a: &str, b: &str) -> bool {
    let groups = nickname_groups();
    match (groups.get(a), groups.get(b)) {
        (Some(ga), Some(gb)) => ga.iter().any(|g| gb.contains(g)),
        _ => false,
    }
}

/// Whether `slipped` is one keyboard slip (a character added, dropped, changed, or two
/// swapped) away from a name the nickname table makes the same as `name`, or from `name`
/// itself: "Olkver" for Ollie, "Mxtthew" for Matt. Tokens under four letters are too short to
/// tell a slip from another name.
pub fn nickname_with_slip(slipped: &str, name: &str) -> bool {
    let one = |x: &str| {
        x.len() >= 4 && slipped.len() >= 4 && within_one_edit(slipped.as_bytes(), x.as_bytes())
    };
    if one(name) {
        return true;
    }
    let Some(ids) = nickname_groups().get(name) else {
        return false;
    };
    ids.iter()
        .filter_map(|&g| NICKNAMES.get(g as usize))
        .any(|group| group.iter().any(|n| *n != name && one(n)))
}

/// American Soundex of a folded token: a coarse phonetic key for blocking, so that a
/// misspelt surname ("Thomson", "Thompson") still lands in the same block.
pub fn soundex(token: &str) -> String {
    fn code(c: char) -> u8 {
        match c {
            'b' | 'f' | 'p' | 'v' => b'1',
            'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => b'2',
            'd' | 't' => b'3',
            'l' => b'4',
            'm' | 'n' => b'5',
            'r' => b'6',
            'h' | 'w' => b'h',
            _ => b'0',
        }
    }
    let mut letters = token.chars().filter(char::is_ascii_alphabetic);
    let Some(first) = letters.next() else {
        return String::new();
    };
    let mut out = vec![first.to_ascii_uppercase() as u8];
    let mut last = code(first);
    for c in letters {
        let k = code(c);
        if k == b'h' {
            continue; // h and w do not separate letters with the same code
        }
        if k != b'0' && k != last {
            out.push(k);
            if out.len() == 4 {
                break;
            }
        }
        last = k;
    }
    while out.len() < 4 {
        out.push(b'0');
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A date of birth as its year, month and day digits. A value with the right shape but an
/// impossible date (month 13, 31 June) is kept and marked, because it is usually a one-digit
/// slip that still says a lot about who the record is; a value of the wrong shape is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dob {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    /// Whether the date exists in the calendar.
    pub valid: bool,
}

/// Why a date of birth could not be read; never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("date of birth must be YYYY-MM-DD, YYYYMMDD or DD/MM/YYYY")]
pub struct DobError;

impl Dob {
    /// Reads `YYYY-MM-DD` (optionally followed by a time), `YYYYMMDD`, `DD/MM/YYYY`,
    /// `DD-MM-YYYY` and `DD.MM.YYYY`: the forms the sources write. `None` for an empty value.
    pub fn parse(raw: &str) -> Result<Option<Self>, DobError> {
        let s = raw.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let num = |t: &str| -> Result<u32, DobError> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DobError);
            }
            t.parse().map_err(|_| DobError)
        };
        let b = s.as_bytes();
        let (y, m, d) = if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
            (num(&s[0..4])?, num(&s[4..6])?, num(&s[6..8])?)
        } else if b.len() >= 10
            && b[4] == b'-'
            && b[7] == b'-'
            && (b.len() == 10 || b[10] == b'T' || b[10] == b' ')
        {
            (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?)
        } else {
            let parts: Vec<&str> = s.split(['/', '-', '.']).collect();
            match parts.as_slice() {
                [d, m, y]
                    if y.len() == 4 && (1..=2).contains(&d.len()) && (1..=2).contains(&m.len()) =>
                {
                    (num(y)?, num(m)?, num(d)?)
                }
                _ => return Err(DobError),
            }
        };
        if !(1..=9999).contains(&y) {
            return Err(DobError);
        }
        let valid = chrono::NaiveDate::from_ymd_opt(y as i32, m, d).is_some();
        Ok(Some(Self {
            year: y as u16,
            month: m as u8,
            day: d as u8,
            valid,
        }))
    }

    /// The eight digits `YYYYMMDD`, for one-digit-slip comparison and blocking keys.
    pub fn digits(&self) -> [u8; 8] {
        let (y, m, d) = (self.year, self.month, self.day);
        [
            (y / 1000 % 10) as u8,
            (y / 100 % 10) as u8,
            (y / 10 % 10) as u8,
            (y % 10) as u8,
            m / 10 % 10,
            m % 10,
            d / 10 % 10,
            d % 10,
        ]
    }
}

/// Sex as every source's code set writes it: FHIR `gender`, the NHS Data Dictionary (1 male,
/// 2 female, 9 not specified, 0 not known), the DfE census (M/F), police systems (M/F/U).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    Female,
    Male,
    /// Indeterminate, other or non-binary: a real value that agrees only with itself.
    Other,
}

impl Sex {
    /// `None` for unknown, not stated and empty values: missing, not a disagreement. An
    /// unrecognised code is also `None`, so a new code set never counts as evidence against.
    pub fn parse(raw: &str) -> Option<Self> {
        match fold(raw).as_str() {
            "f" | "female" | "girl" | "woman" | "2" | "fem" => Some(Self::Female),
            "m" | "male" | "boy" | "man" | "1" => Some(Self::Male),
            "x" | "i" | "o" | "other" | "indeterminate" | "intersex" | "non binary"
            | "nonbinary" => Some(Self::Other),
            _ => None,
        }
    }
}

/// A postcode. UK postcodes know where their outward code (district) ends, so that two
/// records can agree on the sector (`SW1A 1`) or district (`SW1A`) alone; anything that is not
/// a UK postcode (a foreign postal code, a typo) is compared whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Postcode {
    /// Upper case, no spaces.
    compact: String,
    /// Length of the outward code, for UK postcodes.
    outward: Option<usize>,
}

impl Postcode {
    pub fn parse(raw: &str) -> Option<Self> {
        let compact: String = raw
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if compact.is_empty() {
            return None;
        }
        let b = compact.as_bytes();
        let uk = (5..=7).contains(&b.len()) && {
            let (out, inw) = b.split_at(b.len() - 3);
            inw[0].is_ascii_digit()
                && inw[1].is_ascii_alphabetic()
                && inw[2].is_ascii_alphabetic()
                && out[0].is_ascii_alphabetic()
                && out
                    .iter()
                    .find(|c| !c.is_ascii_alphabetic())
                    .is_some_and(u8::is_ascii_digit)
        };
        let outward = uk.then(|| compact.len() - 3);
        Some(Self { compact, outward })
    }

    /// The whole postcode without spaces.
    pub fn compact(&self) -> &str {
        &self.compact
    }

    pub fn is_uk(&self) -> bool {
        self.outward.is_some()
    }

    /// The outward code and the first digit of the inward code, e.g. `SW1A1`.
    pub fn sector(&self) -> Option<&str> {
        self.outward.map(|n| &self.compact[..=n])
    }

    /// The outward code (postcode district), e.g. `SW1A`.
    pub fn district(&self) -> Option<&str> {
        self.outward.map(|n| &self.compact[..n])
    }
}

/// Words in addresses that are written both in full and abbreviated.
const ADDRESS_WORDS: &[(&str, &str)] = &[
    ("st", "street"),
    ("rd", "road"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("ln", "lane"),
    ("dr", "drive"),
    ("ct", "court"),
    ("crt", "court"),
    ("cres", "crescent"),
    ("cr", "crescent"),
    ("pl", "place"),
    ("sq", "square"),
    ("tce", "terrace"),
    ("ter", "terrace"),
    ("gdns", "gardens"),
    ("gr", "grove"),
    ("cl", "close"),
    ("pde", "parade"),
    ("hwy", "highway"),
    ("cct", "circuit"),
    ("mt", "mount"),
    ("nth", "north"),
    ("sth", "south"),
    ("flt", "flat"),
    ("apt", "apartment"),
    ("vlge", "village"),
    ("retrmnt", "retirement"),
];

/// An address line folded, with abbreviations written out, so "27 Shuttle Ln" and
/// "27 shuttle lane" agree. `None` when nothing is left.
pub fn address(raw: &str) -> Option<String> {
    let folded = fold(raw);
    if folded.is_empty() {
        return None;
    }
    let words: Vec<&str> = folded
        .split(' ')
        .map(|w| {
            ADDRESS_WORDS
                .iter()
                .find(|(short, _)| *short == w)
                .map_or(w, |(_, long)| *long)
        })
        .collect();
    Some(words.join(" "))
}

/// A short free-text value (house number, town, county) folded; `None` when empty.
pub fn text(raw: &str) -> Option<String> {
    let f = fold(raw);
    (!f.is_empty()).then_some(f)
}

/// Whether two strings are at most one substitution, insertion, deletion or transposition of
/// neighbours apart, without allocating (this runs on every candidate pair).
pub fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    if ra.is_empty() || rb.is_empty() {
        return true; // equal, or one character more at the end
    }
    match ra.len().cmp(&rb.len()) {
        std::cmp::Ordering::Equal => {
            ra[1..] == rb[1..]
                || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
        }
        std::cmp::Ordering::Greater => ra[1..] == *rb,
        std::cmp::Ordering::Less => *ra == rb[1..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn folding_strips_accents_case_and_punctuation() {
        assert_eq!(fold("  Zoë  O'Brien-SMITH "), "zoe obrien smith");
        assert_eq!(fold("Renée"), "renee");
        assert_eq!(fold("D\u{2019}Arcy"), "darcy");
        assert_eq!(fold("---"), "");
    }

    #[test]
    fn names_split_into_tokens() {
        let n = Name::parse("Mary-Jane  Ann").unwrap();
        assert_eq!(n.tokens, ["mary", "jane", "ann"]);
        assert_eq!(n.joined, "maryjaneann");
        assert_eq!(n.first(), "mary");
        assert_eq!(Name::parse("Mc Donald").unwrap().joined, "mcdonald");
        assert!(Name::parse(" - ").is_none());
    }

    #[test]
    fn nicknames() {
        assert!(nickname_equivalent("william", "bill"));
        assert!(nickname_equivalent("liam", "will"));
        assert!(nickname_equivalent("elizabeth", "liz"));
        assert!(nickname_equivalent("beth", "lizzie"));
        assert!(nickname_equivalent("alex", "alexandra"));
        assert!(nickname_equivalent("alex", "alexander"));
        assert!(!nickname_equivalent("alexander", "alexandra"));
        assert!(!nickname_equivalent("william", "robert"));
        assert!(!nickname_equivalent("zebedee", "zeb"));
        // Short forms British children go by.
        assert!(nickname_equivalent("matilda", "tilly"));
        assert!(nickname_equivalent("florence", "flo"));
        assert!(nickname_equivalent("margot", "maggie"));
        assert!(nickname_equivalent("harrison", "harry"));
        assert!(nickname_equivalent("louis", "louie"));
        // Harry may be either's, but Harrison and Henry are two names; Isla is a name of her own.
        assert!(!nickname_equivalent("harrison", "henry"));
        assert!(!nickname_equivalent("isla", "isabella"));
    }

    #[test]
    fn soundex_codes() {
        assert_eq!(soundex("robert"), "R163");
        assert_eq!(soundex("rupert"), "R163");
        assert_eq!(soundex("ashcraft"), "A261");
        assert_eq!(soundex("tymczak"), "T522");
        assert_eq!(soundex("pfister"), "P236");
        assert_eq!(soundex("smith"), soundex("smyth"));
        // Soundex misses some misspellings (Thompson T512, Thomson T525): the other blocking
        // rules are there for those.
        assert_ne!(soundex("thompson"), soundex("thomson"));
        assert_eq!(soundex("lee"), "L000");
        assert_eq!(soundex(""), "");
    }

    #[test]
    fn dates_of_birth_in_source_formats() {
        let want = Dob {
            year: 2012,
            month: 3,
            day: 4,
            valid: true,
        };
        for s in [
            "2012-03-04",
            "20120304",
            "04/03/2012",
            "4/3/2012",
            "04-03-2012",
            "04.03.2012",
            "2012-03-04T00:00:00Z",
        ] {
            assert_eq!(Dob::parse(s), Ok(Some(want)), "{s}");
        }
        assert_eq!(Dob::parse(" "), Ok(None));
        let slip = Dob::parse("19561331").unwrap().unwrap();
        assert!(!slip.valid);
        assert_eq!(slip.month, 13);
        for bad in ["March 4th", "2012/3", "12-03-04", "2012-3-4x", "0000-01-01"] {
            assert_eq!(Dob::parse(bad), Err(DobError), "{bad}");
        }
    }

    #[test]
    fn sex_codes_from_every_source() {
        for f in ["F", "female", "Female", "2", "girl"] {
            assert_eq!(Sex::parse(f), Some(Sex::Female), "{f}");
        }
        for m in ["M", "male", "1", "boy"] {
            assert_eq!(Sex::parse(m), Some(Sex::Male), "{m}");
        }
        for x in ["X", "other", "I"] {
            assert_eq!(Sex::parse(x), Some(Sex::Other), "{x}");
        }
        for none in ["", "U", "unknown", "9", "0", "not known"] {
            assert_eq!(Sex::parse(none), None, "{none}");
        }
    }

    #[test]
    fn uk_postcodes() {
        let p = Postcode::parse("sw1a 1aa").unwrap();
        assert_eq!(p, Postcode::parse("SW1A1AA").unwrap());
        assert_eq!(p.district(), Some("SW1A"));
        assert_eq!(p.sector(), Some("SW1A1"));
        assert_eq!(Postcode::parse("WT3 5QP").unwrap().sector(), Some("WT35"));
        assert_eq!(Postcode::parse("M1 1AE").unwrap().district(), Some("M1"));
        let foreign = Postcode::parse("4223").unwrap();
        assert!(!foreign.is_uk());
        assert_eq!(foreign.compact(), "4223");
        assert_eq!(foreign.sector(), None);
        assert!(Postcode::parse("  ").is_none());
    }

    #[test]
    fn addresses_expand_abbreviations() {
        assert_eq!(address("27 Shuttle Ln").unwrap(), "27 shuttle lane");
        assert_eq!(
            address("Flat 2, 5 High St.").unwrap(),
            "flat 2 5 high street"
        );
        assert!(address(",").is_none());
    }

    proptest! {
        #[test]
        fn fold_is_idempotent(s in "\\PC{0,40}") {
            let once = fold(&s);
            prop_assert_eq!(fold(&once), once.clone());
            prop_assert!(!once.starts_with(' ') && !once.ends_with(' '));
        }

        #[test]
        fn iso_dates_round_trip(y in 1900u16..2100, m in 1u8..=12, d in 1u8..=28) {
            let iso = format!("{y:04}-{m:02}-{d:02}");
            let compact = format!("{y:04}{m:02}{d:02}");
            let uk = format!("{d:02}/{m:02}/{y:04}");
            let want = Some(Dob { year: y, month: m, day: d, valid: true });
            prop_assert_eq!(Dob::parse(&iso), Ok(want));
            prop_assert_eq!(Dob::parse(&compact), Ok(want));
            prop_assert_eq!(Dob::parse(&uk), Ok(want));
        }

        #[test]
        fn dob_parser_never_panics(s in "\\PC{0,20}") {
            let _ = Dob::parse(&s);
        }

        #[test]
        fn uk_postcodes_parse_with_or_without_space(
            area in "[A-Z]{1,2}", district in "[0-9]{1,2}", sector in "[0-9]", unit in "[A-Z]{2}"
        ) {
            let spaced = format!("{area}{district} {sector}{unit}");
            let p = Postcode::parse(&spaced).unwrap();
            prop_assert_eq!(Postcode::parse(&spaced.replace(' ', "").to_lowercase()), Some(p.clone()));
            let want_district = format!("{area}{district}");
            prop_assert_eq!(p.district(), Some(want_district.as_str()));
        }

        #[test]
        fn postcode_parser_never_panics(s in "\\PC{0,12}") {
            let _ = Postcode::parse(&s);
        }
    }
}
