//! The one model of names every generator draws from: the development cohort
//! ([`crate::cohort`]), the simulated partner systems' population ([`crate::population`]) and
//! the census export. Given and family names as they are distributed in the UK — a few very
//! common, a long tail (a Zipf-like skew over the lists below, and made-up names beyond them) —
//! the short forms agencies write, and the slips a clerk makes. One model, so that the name
//! frequencies an index learns are the same in the demo, the benchmarks and the tests.
//!
//! Names are common UK names or made-up ones; none describes a real person.

use rand::rngs::StdRng;
use rand::Rng;

const BOYS: &[&str] = &[
    "oliver",
    "george",
    "noah",
    "arthur",
    "harry",
    "leo",
    "muhammad",
    "jack",
    "charlie",
    "oscar",
    "jacob",
    "henry",
    "thomas",
    "freddie",
    "alfie",
    "theo",
    "william",
    "theodore",
    "archie",
    "joshua",
    "alexander",
    "james",
    "isaac",
    "edward",
    "lucas",
    "tommy",
    "finley",
    "max",
    "logan",
    "ethan",
    "mohammed",
    "teddy",
    "benjamin",
    "arlo",
    "joseph",
    "sebastian",
    "harrison",
    "elijah",
    "adam",
    "daniel",
    "samuel",
    "louie",
    "mason",
    "reuben",
    "albie",
    "rory",
    "jaxon",
    "hugo",
    "luca",
    "zachary",
    "reggie",
    "hunter",
    "louis",
    "dylan",
    "albert",
    "david",
    "jude",
    "frankie",
    "roman",
    "ezra",
    "toby",
    "riley",
    "carter",
    "ronnie",
    "frederick",
    "gabriel",
    "stanley",
    "bobby",
    "jesse",
    "michael",
    "elliot",
    "grayson",
    "mohammad",
    "liam",
    "jenson",
    "ellis",
    "harley",
    "harvey",
    "jayden",
    "jake",
    "matthew",
    "nathan",
    "connor",
    "kai",
];
const GIRLS: &[&str] = &[
    "olivia",
    "amelia",
    "isla",
    "ava",
    "ivy",
    "freya",
    "lily",
    "florence",
    "mia",
    "willow",
    "rosie",
    "sophia",
    "isabella",
    "grace",
    "daisy",
    "sienna",
    "poppy",
    "elsie",
    "emily",
    "ella",
    "evelyn",
    "phoebe",
    "sofia",
    "evie",
    "charlotte",
    "harper",
    "millie",
    "matilda",
    "maya",
    "sophie",
    "alice",
    "emilia",
    "isabelle",
    "ruby",
    "luna",
    "maisie",
    "aria",
    "penelope",
    "mila",
    "bonnie",
    "eva",
    "hallie",
    "eliza",
    "ada",
    "violet",
    "esme",
    "arabella",
    "imogen",
    "jessica",
    "delilah",
    "lottie",
    "thea",
    "layla",
    "ellie",
    "hannah",
    "margot",
    "nancy",
    "elizabeth",
    "rebecca",
    "katherine",
    "georgia",
    "scarlett",
    "zara",
    "molly",
    "chloe",
    "lucy",
    "amber",
    "holly",
    "megan",
    "erin",
    "lola",
    "ayla",
    "aisha",
    "fatima",
    "maryam",
    "zainab",
    "nia",
];
/// Short forms agencies write for the formal name (a school or the police, mostly).
const SHORT: &[(&str, &str)] = &[
    ("oliver", "ollie"),
    ("thomas", "tom"),
    ("william", "will"),
    ("alexander", "alex"),
    ("james", "jamie"),
    ("edward", "ed"),
    ("benjamin", "ben"),
    ("joseph", "joe"),
    ("daniel", "dan"),
    ("samuel", "sam"),
    ("matthew", "matt"),
    ("frederick", "freddie"),
    ("theodore", "theo"),
    ("zachary", "zach"),
    ("michael", "mike"),
    ("isabella", "bella"),
    ("elizabeth", "beth"),
    ("charlotte", "lottie"),
    ("katherine", "kate"),
    ("rebecca", "becky"),
    ("jessica", "jess"),
    ("penelope", "penny"),
    ("matilda", "tilly"),
    ("florence", "flo"),
    ("margot", "maggie"),
];
const SURNAMES: &[&str] = &[
    "smith",
    "jones",
    "williams",
    "taylor",
    "brown",
    "davies",
    "evans",
    "wilson",
    "thomas",
    "johnson",
    "roberts",
    "robinson",
    "thompson",
    "wright",
    "walker",
    "white",
    "edwards",
    "hughes",
    "green",
    "hall",
    "lewis",
    "harris",
    "clarke",
    "patel",
    "jackson",
    "wood",
    "turner",
    "martin",
    "cooper",
    "hill",
    "ward",
    "morris",
    "moore",
    "clark",
    "lee",
    "king",
    "baker",
    "harrison",
    "morgan",
    "allen",
    "james",
    "scott",
    "phillips",
    "watson",
    "davis",
    "parker",
    "price",
    "bennett",
    "young",
    "griffiths",
    "mitchell",
    "kelly",
    "cook",
    "carter",
    "richardson",
    "bailey",
    "collins",
    "bell",
    "shaw",
    "murphy",
    "miller",
    "cox",
    "richards",
    "khan",
    "marshall",
    "anderson",
    "simpson",
    "ellis",
    "adams",
    "singh",
    "begum",
    "wilkinson",
    "foster",
    "chapman",
    "powell",
    "webb",
    "rogers",
    "gray",
    "mason",
    "ali",
    "hunt",
    "hussain",
    "campbell",
    "matthews",
    "owen",
    "palmer",
    "holmes",
    "mills",
    "barnes",
    "knight",
    "lloyd",
    "butler",
    "russell",
    "barker",
    "fisher",
    "stevens",
    "jenkins",
    "murray",
    "dixon",
    "harvey",
    "ahmed",
    "okafor",
    "nowak",
    "kowalski",
    "oconnor",
    "obrien",
    "mcdonald",
    "macleod",
    "nguyen",
    "chen",
    "rahman",
];
const STARTS: &[&str] = &[
    "ash", "bar", "black", "brad", "bram", "car", "dal", "den", "fair", "fer", "gar", "glen",
    "hal", "har", "hart", "kem", "kings", "lan", "mar", "mor", "nor", "oak", "pen", "ros", "sel",
    "stan", "tal", "thorn", "wal", "whit", "win", "wood", "york", "cal", "dun", "elm", "ford",
];
const ENDS: &[&str] = &[
    "ton", "by", "ford", "ley", "well", "wood", "son", "man", "field", "ridge", "more", "ham",
    "stead", "worth", "croft", "er", "ell", "ock", "wick", "burn", "den", "low", "gate",
];

/// Picks from a list with a Zipf-like skew: the first few entries are far commoner than the
/// last, as with names.
fn zipf<'a>(rng: &mut StdRng, list: &[&'a str], s: f64) -> &'a str {
    // Inverse-CDF of a continuous power law over ranks 1..=n.
    let n = list.len() as f64;
    let u: f64 = rng.gen();
    let rank = if (s - 1.0).abs() < 1e-9 {
        n.powf(u)
    } else {
        (1.0 + u * (n.powf(1.0 - s) - 1.0)).powf(1.0 / (1.0 - s))
    };
    list[((rank as usize).max(1) - 1).min(list.len() - 1)]
}

fn made_up_surname(rng: &mut StdRng) -> String {
    format!(
        "{}{}",
        STARTS[rng.gen_range(0..STARTS.len())],
        ENDS[rng.gen_range(0..ENDS.len())]
    )
}

fn made_up_given(rng: &mut StdRng) -> String {
    format!(
        "{}{}",
        STARTS[rng.gen_range(0..STARTS.len())],
        ["a", "ie", "y", "o", "en", "ia", "is", "an"][rng.gen_range(0..8)]
    )
}

/// Names parents would not give two of their children: the same name, names beginning
/// alike, or one a usual short form of the other.
pub(crate) fn alike(a: &str, b: &str) -> bool {
    const FORMS: &[(&str, &str)] = &[
        ("amelia", "mia"),
        ("amelia", "millie"),
        ("amelia", "emily"),
        ("isabella", "bella"),
        ("isabelle", "bella"),
        ("isabella", "isabelle"),
        ("theodore", "teddy"),
        ("edward", "teddy"),
        ("elizabeth", "eliza"),
        ("elizabeth", "ellie"),
        ("eleanor", "ellie"),
        ("charlotte", "lottie"),
        ("matilda", "tilly"),
        ("margot", "maisie"),
        ("harrison", "harry"),
        ("henry", "harry"),
        ("alfred", "alfie"),
        ("frederick", "freddie"),
        ("louis", "louie"),
        ("mohammed", "muhammad"),
        ("mohammad", "muhammad"),
        ("mohammed", "mohammad"),
    ];
    let prefix = |x: &str| x.chars().take(3).collect::<String>();
    a == b
        || prefix(a) == prefix(b)
        || SHORT
            .iter()
            .chain(FORMS)
            .any(|&(x, y)| (x == a && y == b) || (x == b && y == a))
}

/// One slip of the keyboard in a name.
pub(crate) fn typo(rng: &mut StdRng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 4 {
        return s.to_string();
    }
    let i = rng.gen_range(1..c.len());
    match rng.gen_range(0..4) {
        0 => c[i] = (b'a' + rng.gen_range(0..26)) as char,
        1 => {
            c.remove(i);
        }
        2 => c.insert(i, c[i]),
        _ => c.swap(i - 1, i),
    }
    c.into_iter().collect()
}

/// A given name: one of the common ones, skewed as in the UK, or (about one in seven) a
/// rarer one from the tail.
pub fn given(rng: &mut StdRng, female: bool) -> String {
    if rng.gen_bool(0.15) {
        made_up_given(rng)
    } else {
        zipf(rng, if female { GIRLS } else { BOYS }, 1.1).to_string()
    }
}

/// A family name: one of the common ones, skewed as in the UK, or (three in ten) a rarer one
/// from the tail.
pub fn family(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.7) {
        surname(rng).to_string()
    } else {
        made_up_surname(rng)
    }
}

/// One of the common family names, skewed as in the UK (the second part of a double-barrelled
/// name, say).
fn surname(rng: &mut StdRng) -> &'static str {
    zipf(rng, SURNAMES, 1.0)
}

/// The short form agencies write for a formal given name, if it has one.
pub fn short_form(given: &str) -> Option<&'static str> {
    SHORT.iter().find(|(f, _)| *f == given).map(|&(_, s)| s)
}

/// A family name as a household is given it: [`family`], double-barrelled now and then.
pub fn family_name(rng: &mut StdRng) -> String {
    let family = family(rng);
    if rng.gen_bool(0.04) {
        format!("{family}-{}", surname(rng))
    } else {
        family
    }
}

/// A name as most systems write it, each part capitalised (the lists are lower case).
pub fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = matches!(c, ' ' | '-' | '\'');
    }
    out
}
