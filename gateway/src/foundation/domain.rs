//! Words of the domain that arrive from outside — purposes of use and practitioner roles —
//! parsed once at the edge so that the pipeline only ever sees known values.

macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::foundation::domain::UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err($crate::foundation::domain::UnknownWord {
                        what: stringify!($name),
                        allowed: &[$($text),*],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Words of the domain's other vocabularies (a concern's category and urgency, a child's
/// social care status) are declared the same way.
pub(crate) use vocabulary;

vocabulary! {
    /// Why data is being looked at. Every read names one; policy and lawful basis follow from it.
    Purpose {
        Safeguarding => "safeguarding",
        ChildInNeed => "child_in_need",
        EarlyHelp => "early_help",
        EducationWelfare => "education_welfare",
        DirectCare => "direct_care",
        Audit => "audit",
    }
}

vocabulary! {
    /// What a practitioner does, as their token states it; policy is written against roles.
    Role {
        SocialWorker => "social_worker",
        Dsl => "dsl",
        Teacher => "teacher",
        EducationWelfareOfficer => "education_welfare_officer",
        HealthPractitioner => "health_practitioner",
        PoliceOfficer => "police_officer",
        MashOfficer => "mash_officer",
        IgOfficer => "ig_officer",
        DataAdmin => "data_admin",
        LaAnalyst => "la_analyst",
        DataManager => "data_manager",
    }
}

vocabulary! {
    /// A relationship the data shows between a practitioner and a child, which is what lets the
    /// practitioner see the child at all (`relationships.roles` in the configuration says which
    /// of these count for each role).
    Relation {
        SchoolRoll => "school_roll",
        LaSchoolRoll => "la_school_roll",
        AllocatedWorker => "allocated_worker",
        AllocatedTeam => "allocated_team",
        CareRelationship => "care_relationship",
        ForceRecords => "force_records",
        Referral => "referral",
        MashTriage => "mash_triage",
    }
}

/// A word outside the vocabulary; the message lists what is allowed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what}; expected one of: {}", allowed.join(", "))]
pub struct UnknownWord {
    pub(crate) what: &'static str,
    pub(crate) allowed: &'static [&'static str],
}

/// The data categories the default policy and the adapters' mappings speak of. Policy decisions
/// are precomputed over these; an item in any other category is withheld (`no_policy`).
pub const CATEGORIES: &[&str] = &[
    "education.known",
    "social_care.known",
    "health.known",
    "police.known",
    "identity.core",
    "identity.contact",
    "education.enrolment",
    "education.attendance",
    "education.exclusions",
    "education.attainment",
    "education.send",
    "social_care.status",
    "social_care.allocated_worker",
    "social_care.case_notes",
    "health.registration",
    "health.cp_flag",
    "health.appointments",
    "health.sensitive",
    "police.incidents",
    "police.domestic_abuse",
];

/// The categories of area reports (`crate::read::area`): aggregates over many children, never
/// one child's data, so no view lists them. Which measures, and how far: every school and area
/// of the authority, or only one's own school.
pub const AREA_CATEGORIES: &[&str] = &[
    "area.attendance",
    "area.exclusions",
    "area.social_care",
    "area.all_schools",
    "area.own_school",
];

/// The categories of data-quality reports (`crate::read::quality`): which sources' records, and
/// whether with the other systems' values. About records, never shown in a child's view.
pub const QUALITY_CATEGORIES: &[&str] = &["quality.all_sources", "quality.own_sources"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), *p);
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
    }

    #[test]
    fn unknown_lists_allowed() {
        let e = "curiosity".parse::<Purpose>().unwrap_err().to_string();
        assert!(e.contains("safeguarding") && e.contains("audit"), "{e}");
    }
}
