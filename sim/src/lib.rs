//! Simulated partner systems on loopback, speaking their real protocols, seeded with synthetic
//! children: what `weft demo`, the benchmark and the end-to-end tests run the gateway against.
//!
//! - [`cohort`]: the development cohort for identity matching, with its truth apart.
//! - [`names`]: the one model of names they all draw from (UK-like frequencies, short forms,
//!   typos).
//! - [`census`]: a school census export of the cohort's pupils, for `weft bench import`.
//! - [`population`]: the synthetic children — a canonical truth each, and how each system
//!   records them (nicknames, misspellings, moved addresses, missing identifiers).
//! - [`sqlseed`]: the social care and school MIS reporting databases (SQLite, PostgreSQL,
//!   MariaDB/MySQL).
//! - [`fhir`]: the health trust's FHIR R4 server (Patient, Flag).
//! - [`police`]: the force's JSON records API.
//! - [`sources`]: the agency and source configuration that reads all of the above.
//! - [`server`]: the HTTP server under both, with a [`Fault`] switch per server.
//! - [`delayed`]: a fixed-latency source for the benchmark.
//!
//! [`PartnerSystems::start`] brings the four up together.

pub mod census;
pub mod cohort;
pub mod delayed;
pub mod fhir;
pub mod names;
pub mod police;
pub mod population;
pub mod server;
pub mod sources;
pub mod sqlseed;

use std::path::Path;

pub use delayed::start_delayed_source;
pub use population::{generate, Population, SimChild, System};
pub use server::{Fault, FaultSwitch, SimServer};
pub use sources::{Agency, Endpoints, Source};

/// The four simulated partners, running. Dropping it (or [`PartnerSystems::shutdown`]) stops the
/// HTTP servers; the databases stay where they are, for the caller's directory to clean up.
#[derive(Debug)]
pub struct PartnerSystems {
    /// The agencies that own the sources.
    pub agencies: Vec<Agency>,
    /// One source per partner, pointing at the running servers and seeded databases.
    pub sources: Vec<Source>,
    /// Where everything is, e.g. to write a configuration file.
    pub endpoints: Endpoints,
    /// The children the partners were seeded with: the ground truth tests compare views to.
    pub population: Population,
    /// The health trust's FHIR server.
    pub fhir: SimServer,
    /// The police force's records API.
    pub police: SimServer,
}

impl PartnerSystems {
    /// Seeds the social care and school databases (SQLite files in `dir`, created if need be,
    /// unless URLs are given; existing tables are replaced) and starts the FHIR and police servers on free loopback
    /// ports.
    pub async fn start(
        dir: &Path,
        pop: &Population,
        social_care_url: Option<String>,
        education_url: Option<String>,
    ) -> anyhow::Result<PartnerSystems> {
        std::fs::create_dir_all(dir)?;
        let social_care_db =
            social_care_url.unwrap_or_else(|| sqlseed::sqlite_url(&dir.join("social_care.db")));
        let education_db =
            education_url.unwrap_or_else(|| sqlseed::sqlite_url(&dir.join("school_mis.db")));
        sqlseed::seed_social_care(&social_care_db, pop).await?;
        sqlseed::seed_education(&education_db, pop).await?;
        let fhir = fhir::start(pop).await?;
        let police = police::start(pop).await?;
        let endpoints = Endpoints {
            social_care_db,
            education_db,
            fhir: fhir.base_url(),
            police: police.base_url(),
        };
        tracing::info!(
            children = pop.children.len(),
            fhir = %fhir.addr,
            police = %police.addr,
            "simulated partner systems started"
        );
        Ok(PartnerSystems {
            agencies: sources::agencies(),
            sources: sources::sources(&endpoints)?,
            endpoints,
            population: pop.clone(),
            fhir,
            police,
        })
    }

    /// The id of the source that reads `system`.
    pub fn source_id(&self, system: System) -> String {
        match system {
            System::Health => sources::HEALTH_SOURCE,
            System::School => sources::SCHOOL_SOURCE,
            System::SocialCare => sources::SOCIAL_CARE_SOURCE,
            System::Police => sources::POLICE_SOURCE,
        }
        .to_string()
    }

    /// The source configuration that reads `system`.
    pub fn source(&self, system: System) -> &Source {
        let id = self.source_id(system);
        self.sources
            .iter()
            .find(|s| s.id == id)
            .expect("one source per system")
    }

    /// The fault switch of an HTTP partner.
    ///
    /// # Panics
    ///
    /// For the school and social care systems, which are databases, not servers: a test that
    /// asks for their switch is wrong about what it is testing.
    pub fn fault(&self, system: System) -> &FaultSwitch {
        match system {
            System::Health => self.fhir.faults(),
            System::Police => self.police.faults(),
            System::School | System::SocialCare => {
                panic!("{system:?} is a database; only health and police take faults")
            }
        }
    }

    /// Stops both HTTP servers and waits until their connections are closed.
    pub async fn shutdown(self) {
        self.fhir.shutdown().await;
        self.police.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_all_four_and_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("partners");
        let pop = generate(2024, 50);
        let partners = PartnerSystems::start(&dir, &pop, None, None).await.unwrap();
        assert_eq!(partners.agencies.len(), 4);
        assert_eq!(partners.sources.len(), 4);
        assert!(dir.join("social_care.db").exists());
        assert!(dir.join("school_mis.db").exists());
        for s in &partners.sources {
            assert!(partners.agencies.iter().any(|a| a.id == s.agency));
        }

        let child = pop.linkable_disagreement().unwrap();
        let id = child.local_id(System::Police).unwrap();
        let r = reqwest::get(format!("{}/people/{id}", partners.endpoints.police))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        assert_eq!(partners.source_id(System::Police), sources::POLICE_SOURCE);
        assert!(partners
            .sources
            .iter()
            .any(|s| s.id == partners.source_id(System::School)));
        assert_eq!(partners.population, pop);
        partners.fault(System::Police).set(Fault::Status(503));
        let r = reqwest::get(format!("{}/people/{id}", partners.endpoints.police))
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(partners.police.requests(), 2);
        assert_eq!(partners.fhir.requests(), 0);

        let addrs = [partners.fhir.addr, partners.police.addr];
        partners.shutdown().await;
        for addr in addrs {
            assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        }
    }

    /// The configuration `sources` produces is read by the real adapters: every partner lists
    /// its records with the identifiers they should carry, and a fetch yields the categories the
    /// configuration promises.
    #[tokio::test]
    async fn the_configured_adapters_read_every_partner() {
        use std::collections::BTreeSet;

        let dir = tempfile::tempdir().unwrap();
        let pop = generate(99, 50);
        let partners = PartnerSystems::start(dir.path(), &pop, None, None)
            .await
            .unwrap();
        let child = pop.scenario().unwrap();
        for system in System::ALL {
            let adapter = partners.source(system).adapter.build().unwrap();

            let listed = adapter.list().await.unwrap().expect("every partner lists");
            let held = pop.children.iter().filter(|c| c.present_in(system)).count();
            assert_eq!(listed.len(), held, "{system:?}");
            let local = child.local_id(system).unwrap();
            let record = listed.iter().find(|r| r.local_id == local).unwrap();
            let has = |kind: &str, value: &Option<String>| {
                record
                    .identifiers
                    .iter()
                    .any(|i| i.kind == kind && Some(&i.value) == value.as_ref())
            };
            let identity = child.identity(system).unwrap();
            assert!(has("nhs_number", &identity.nhs_number), "{system:?}");
            if identity.upn.is_some() {
                assert!(has("upn", &identity.upn), "{system:?}");
            }
            assert_eq!(record.demographics.family_name.as_deref(), Some("Calder"));
            assert_eq!(
                record.demographics.birth_date.as_deref(),
                Some("2011-05-14")
            );

            let items = adapter.fetch(local).await.unwrap().expect("record held");
            let categories: BTreeSet<&str> = items.iter().map(|i| i.category.as_str()).collect();
            let expected: &[&str] = match system {
                System::Health => &["identity.core", "identity.contact", "health.registration"],
                System::School => &[
                    "identity.core",
                    "identity.contact",
                    "education.enrolment",
                    "education.attendance",
                    "education.exclusions",
                    "education.send",
                ],
                System::SocialCare => &[
                    "identity.core",
                    "identity.contact",
                    "social_care.status",
                    "social_care.allocated_worker",
                    "social_care.case_notes",
                ],
                System::Police => &[
                    "identity.core",
                    "identity.contact",
                    "police.incidents",
                    "police.domestic_abuse",
                ],
            };
            assert_eq!(categories, expected.iter().copied().collect(), "{system:?}");
            assert!(adapter.fetch("no-such-record").await.unwrap().is_none());
        }

        // Attendance arrives as numbers per term, the latest below 90 %.
        let school = partners.source(System::School).adapter.build().unwrap();
        let items = school
            .fetch(child.local_id(System::School).unwrap())
            .await
            .unwrap()
            .unwrap();
        let terms = &items
            .iter()
            .find(|i| i.category == "education.attendance")
            .unwrap()
            .value;
        let last = terms.as_array().unwrap().last().unwrap();
        assert_eq!(last["attendance_percent"].as_f64(), Some(80.0));

        // CP-IS codes reach the view as health.cp_flag, sensitive codes as health.sensitive.
        let health = partners.source(System::Health).adapter.build().unwrap();
        for (wanted, category) in [(true, "health.cp_flag"), (false, "health.sensitive")] {
            let flagged = pop
                .health_records()
                .find(|h| {
                    h.flags
                        .iter()
                        .any(|f| population::flag_codes::is_cp(&f.code) == wanted)
                })
                .unwrap();
            let items = health
                .fetch(&flagged.identity.local_id)
                .await
                .unwrap()
                .unwrap();
            assert!(items.iter().any(|i| i.category == category), "{category}");
        }
    }
}
