//! The one configuration builder for development environments — the demo, the benchmarks and
//! the end-to-end tests: throwaway certificates and token keys ([`DevPki`]), a store, the
//! repository's policy, and the agencies and sources given. It writes TOML, because that is what
//! `weft serve` reads and what the demo leaves behind for a user to read; [`DevConfig::load`]
//! runs it through the same checks as a file.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::dev::pki::DevPki;
use crate::foundation::config::{AgencyConfig, Config, SourceConfig};
use crate::foundation::schema::Schemas;

const MODEL: &str = include_str!("../../../policies/model.conf");
const POLICY: &str = include_str!("../../../policies/policy.csv");
const ROUTING: &str = include_str!("../../../policies/routing.toml");

/// The repository's policy files when running from a checkout; otherwise copies of the policy
/// this binary was built with, written into `dir`. Returns the model and the policy; the
/// routing rules sit beside the policy.
pub fn policy_paths(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (model, policy) = (
        repo.join("policies/model.conf"),
        repo.join("policies/policy.csv"),
    );
    if model.exists() && policy.exists() {
        return Ok((model, policy));
    }
    let (model, policy) = (dir.join("model.conf"), dir.join("policy.csv"));
    std::fs::write(&model, MODEL)?;
    std::fs::write(&policy, POLICY)?;
    std::fs::write(dir.join("routing.toml"), ROUTING)?;
    Ok((model, policy))
}

/// A configuration under construction, as a TOML table.
#[derive(Debug, Clone)]
pub struct DevConfig {
    table: toml::Table,
    agencies: Vec<AgencyConfig>,
    sources: Vec<SourceConfig>,
}

impl DevConfig {
    /// HTTPS on a free loopback port with the PKI's server certificate, tokens from its issuer,
    /// the store at `database_url`, the policy at `model` and `policy`, and an index that is
    /// built once (`index.refresh_secs = 0`).
    pub fn new(pki: &DevPki, database_url: &str, (model, policy): (PathBuf, PathBuf)) -> Self {
        let path = |p: &Path| p.display().to_string();
        let mut c = DevConfig {
            table: toml::Table::new(),
            agencies: Vec::new(),
            sources: Vec::new(),
        };
        c = c
            .set("listen", "127.0.0.1:0")
            .set("tls.cert", path(&pki.server_cert))
            .set("tls.key", path(&pki.server_key))
            .set("database.url", database_url)
            .set("policy.model", path(&model))
            .set("policy.policy", path(&policy))
            .set("index.refresh_secs", 0)
            .set("auth.issuer", pki.issuer.issuer.as_str())
            .set("auth.audience", pki.issuer.audience.as_str());
        let mut key = toml::Table::new();
        key.insert("kid".into(), pki.issuer.kid.clone().into());
        key.insert("algorithm".into(), "ES256".into());
        key.insert("public_key".into(), path(&pki.token_public_key).into());
        c.set("auth.keys", toml::Value::Array(vec![key.into()]))
    }

    /// Sets a key, dotted for tables (`limits.max_in_flight`), replacing what was there.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        let mut table = &mut self.table;
        for part in parts {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            match entry {
                toml::Value::Table(t) => table = t,
                _ => unreachable!("made a table above"),
            }
        }
        table.insert(last.to_string(), value.into());
        self
    }

    /// Signed audit checkpoints into `dir/audit-checkpoints`, with a signing key generated into
    /// `dir/audit-signing.key` (a development key: a real one lives where the database's
    /// administrators cannot read it).
    pub fn audit_checkpoints(self, dir: &Path) -> anyhow::Result<Self> {
        let key = dir.join("audit-signing.key");
        if !key.exists() {
            let (_, text) = crate::foundation::audit::checkpoint::SigningKey::generate()?;
            std::fs::write(&key, text + "\n")
                .with_context(|| format!("writing {}", key.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(self
            .set(
                "audit.checkpoint_dir",
                dir.join("audit-checkpoints").display().to_string(),
            )
            .set("audit.signing_key_file", key.display().to_string()))
    }

    /// The development sign-in page, offering `people`.
    pub fn dev_sign_in(self, people: &[crate::foundation::config::DevPerson]) -> Self {
        let people =
            toml::Value::try_from(people).unwrap_or_else(|_| toml::Value::Array(Vec::new()));
        self.set("web.dev_sign_in", true)
            .set("web.dev_people", people)
    }

    /// Mutual TLS: calling systems must present a certificate from the PKI's CA.
    pub fn mutual_tls(self, pki: &DevPki) -> Self {
        self.set("tls.client_ca", pki.ca.display().to_string())
    }

    pub fn agency(mut self, agency: AgencyConfig) -> Self {
        if !self.agencies.iter().any(|a| a.id == agency.id) {
            self.agencies.push(agency);
        }
        self
    }

    pub fn source(mut self, source: SourceConfig) -> Self {
        self.sources.push(source);
        self
    }

    /// The agencies and sources of simulated partner systems.
    #[cfg(feature = "sim")]
    pub fn partners(mut self, agencies: &[weft_sim::Agency], sources: &[weft_sim::Source]) -> Self {
        for a in agencies {
            self = self.agency(sim_agency(a));
        }
        for s in sources {
            self = self.source(sim_source(s));
        }
        self
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        #[derive(serde::Serialize)]
        struct Tables<'a> {
            agencies: &'a [AgencyConfig],
            sources: &'a [SourceConfig],
        }
        // Tables of tables last, as TOML wants them after plain keys.
        Ok(format!(
            "{}\n{}",
            toml::to_string(&self.table)?,
            toml::to_string(&Tables {
                agencies: &self.agencies,
                sources: &self.sources,
            })?
        ))
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_toml()?).with_context(|| format!("writing {}", path.display()))
    }

    /// The configuration, checked as `weft serve` would check the file; relative paths are
    /// relative to `dir`.
    pub fn load(&self, dir: &Path) -> anyhow::Result<Config> {
        Ok(Config::from_toml(&self.to_toml()?, dir, &Schemas::load()?)?)
    }
}

/// The local authority every simulated agency belongs to.
pub const SIM_LOCAL_AUTHORITY: &str = "weftshire";

/// A simulated agency as the gateway's configuration has it.
#[cfg(feature = "sim")]
pub fn sim_agency(a: &weft_sim::Agency) -> AgencyConfig {
    AgencyConfig {
        id: a.id.clone(),
        name: a.name.clone(),
        kind: match a.kind {
            "education" => crate::foundation::config::AgencyKind::Education,
            "social_care" => crate::foundation::config::AgencyKind::SocialCare,
            "health" => crate::foundation::config::AgencyKind::Health,
            "police" => crate::foundation::config::AgencyKind::Police,
            other => unreachable!("the simulator's agencies are of the four kinds: {other}"),
        },
        // Every simulated agency serves the one simulated county.
        local_authority: Some(SIM_LOCAL_AUTHORITY.to_string()),
    }
}

/// A simulated source as the gateway's configuration has it, with the default resilience.
#[cfg(feature = "sim")]
pub fn sim_source(s: &weft_sim::Source) -> SourceConfig {
    SourceConfig {
        id: s.id.clone(),
        agency: s.agency.clone(),
        deadline_ms: s.deadline_ms,
        resilience: crate::foundation::config::Resilience::default(),
        restrictions: None,
        adapter: s.adapter.clone(),
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;

    fn endpoints(db: &str) -> weft_sim::Endpoints {
        weft_sim::Endpoints {
            social_care_db: db.to_string(),
            education_db: db.to_string(),
            fhir: "http://127.0.0.1:1".into(),
            police: "http://127.0.0.1:2".into(),
        }
    }

    /// The partners' agencies and sources, through TOML as the demo writes them, pass the
    /// configuration schema and every check `weft serve` makes, in every SQL dialect.
    #[test]
    fn simulated_partners_make_a_valid_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&dir.path().join("pki")).unwrap();
        for db in [
            "sqlite:///tmp/x.db?mode=rwc",
            "postgres://u@h/d",
            "mysql://u@h/d",
        ] {
            let sources = weft_sim::sources::sources(&endpoints(db)).unwrap();
            let config =
                DevConfig::new(&pki, "sqlite://weft.db", policy_paths(dir.path()).unwrap())
                    .set("limits.max_in_flight", 64)
                    .partners(&weft_sim::sources::agencies(), &sources)
                    .load(dir.path())
                    .unwrap_or_else(|e| panic!("{db}: {e:#}"));
            assert_eq!(config.sources.len(), 4, "{db}");
            assert_eq!(config.limits.max_in_flight, 64);
            for s in &sources {
                let back = config.sources.iter().find(|c| c.id == s.id).unwrap();
                assert_eq!(back, &sim_source(s), "{db}: {} round-trips", s.id);
            }
        }
    }

    #[test]
    fn every_simulated_kind_is_known() {
        for a in weft_sim::sources::agencies() {
            assert_eq!(sim_agency(&a).kind.as_str(), a.kind);
        }
    }
}
