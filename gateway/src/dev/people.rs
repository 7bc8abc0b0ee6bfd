//! The people of the demo and the tests, one per role: who the development sign-in page offers
//! and who the demo prints tokens for. Each is only a user id, an agency and a role; they
//! become [`crate::pipeline::authenticate::Principal`]s where a token's claims do.
//!
//! The social worker's user id is the name the simulated case system records as the allocated
//! worker of the scenario child and of several others, so concerns about those children and
//! access notifications reach her inbox.

use crate::foundation::config::DevPerson;
use weft_sim::sources::{HEALTH_AGENCY, POLICE_AGENCY, SCHOOL_AGENCY, SOCIAL_CARE_AGENCY};

/// One person: the shell variable the demo's token goes in, and who they are.
pub struct Person {
    pub var: &'static str,
    pub person: DevPerson,
}

fn person(
    var: &'static str,
    user: &str,
    name: &str,
    agency: &str,
    role: &str,
    does: &str,
) -> Person {
    Person {
        var,
        person: DevPerson {
            user: user.into(),
            name: name.into(),
            agency: agency.into(),
            role: role.into(),
            description: Some(does.into()),
        },
    }
}

/// The allocated worker the simulator gives the scenario child.
pub const ALLOCATED_WORKER: &str = "Demo allocated social worker";

pub fn people() -> Vec<Person> {
    vec![
        person(
            "SOCIAL_WORKER",
            ALLOCATED_WORKER,
            ALLOCATED_WORKER,
            SOCIAL_CARE_AGENCY,
            "social_worker",
            "Allocated worker of several children, the scenario child among them: concerns and access notifications about them arrive in her inbox",
        ),
        person(
            "DSL",
            "demo-dsl",
            "Demo DSL",
            SCHOOL_AGENCY,
            "dsl",
            "Finds a child, sees whether social care knows them, raises concerns",
        ),
        person(
            "TEACHER",
            "demo-teacher",
            "Demo teacher",
            SCHOOL_AGENCY,
            "teacher",
            "Sees little beyond the school's own record",
        ),
        person(
            "EWO",
            "demo-education-welfare-officer",
            "Demo education welfare officer",
            SOCIAL_CARE_AGENCY,
            "education_welfare_officer",
            "Attendance concerns arrive in this role's inbox",
        ),
        person(
            "HEALTH",
            "demo-health-practitioner",
            "Demo health practitioner",
            HEALTH_AGENCY,
            "health_practitioner",
            "Sees whether a child is on a plan or looked after",
        ),
        person(
            "POLICE",
            "demo-police-officer",
            "Demo police officer",
            POLICE_AGENCY,
            "police_officer",
            "Sees what police may share",
        ),
        person(
            "MASH_OFFICER",
            "demo-mash-officer",
            "Demo MASH officer",
            SOCIAL_CARE_AGENCY,
            "mash_officer",
            "Every concern arrives in this role's inbox for triage",
        ),
        person(
            "IG_OFFICER",
            "demo-ig-officer",
            "Demo IG officer",
            SOCIAL_CARE_AGENCY,
            "ig_officer",
            "Reads the audit log, reviews break-glass and produces subject access reports",
        ),
        person(
            "LA_ANALYST",
            "demo-la-analyst",
            "Demo local authority analyst",
            SOCIAL_CARE_AGENCY,
            "la_analyst",
            "Reads area trends (attendance, persistent absence, exclusions, known to social care) by school, area and term; never a child's record",
        ),
        person(
            "DATA_MANAGER",
            "demo-data-manager",
            "Demo school data manager",
            SCHOOL_AGENCY,
            "data_manager",
            "Keeps the school's MIS records right: reads the data-quality report of the school's own records (which fields disagree with other systems, never their values)",
        ),
        person(
            "DATA_ADMIN",
            "demo-data-admin",
            "Demo data administrator",
            SOCIAL_CARE_AGENCY,
            "data_admin",
            "Works the match review queue, reads sources' health and sends dead letters again",
        ),
    ]
}
