//! A broken configuration stops the gateway before it listens, naming the key.

use crate::harness::{run_weft, Env};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_configuration_names_the_key_and_exits_non_zero() {
    let env = Env::new(2).await;
    let good = env.config(false);
    assert!(good.contains("deadline_ms"), "sources carry deadlines");

    let cases = [
        (
            "wrong type",
            regex_replace_first(&good, "deadline_ms = ", "deadline_ms = \"soon\" # "),
            "sources[0].deadline_ms",
        ),
        (
            "unknown agency",
            good.replacen(
                &format!("agency = \"{}\"", env.partners.sources[0].agency),
                "agency = \"nowhere\"",
                1,
            ),
            "sources[0].agency",
        ),
        (
            "missing section",
            good.replacen("[database]", "[databass]", 1),
            "databass",
        ),
        (
            "plain HTTP off loopback",
            format!("insecure_plaintext = true\n{}", without_tls(&good)).replacen(
                "127.0.0.1:0",
                "0.0.0.0:0",
                1,
            ),
            "insecure_plaintext",
        ),
        ("not TOML", format!("{good}\n[[sources]\n"), "TOML"),
        (
            "matching thresholds the wrong way round",
            format!("{good}\n[matching]\nupper = 0.6\nlower = 0.9\n"),
            "matching.lower",
        ),
        (
            "matching threshold not a probability",
            format!("{good}\n[matching]\nupper = 2\n"),
            "matching.upper",
        ),
        (
            "matching model missing",
            format!("{good}\n[matching]\nmodel = \"no-such-model.json\"\n"),
            "matching.model",
        ),
    ];
    for (what, text, key) in cases {
        let path = env.write_config("broken.toml", &text);
        let p = path.to_str().expect("path");
        for cmd in [vec!["config", "check", "-c", p], vec!["serve", "-c", p]] {
            let (code, out, err) = run_weft(&cmd);
            assert_ne!(code, 0, "{what}: {cmd:?} must fail");
            assert!(err.contains(key), "{what}: {cmd:?} names {key}: {err}");
            assert!(!out.contains("listening"), "{what}: never listens");
        }
    }
}

/// The configuration with its `[tls]` table removed.
fn without_tls(text: &str) -> String {
    let start = text.find("[tls]").expect("tls table");
    let end = start + text[start..].find("\n\n").expect("end of tls table");
    format!("{}{}", &text[..start], &text[end..])
}

fn regex_replace_first(text: &str, from: &str, to: &str) -> String {
    text.replacen(from, to, 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_command_needs_only_the_files_it_uses() {
    let env = Env::new(2).await;
    let missing = env.dir.path().join("not-here");
    let m = |name: &str| format!("{:?}", missing.join(name).display().to_string());
    let text = env
        .config(false)
        .replacen(
            &format!("cert = {:?}", env.pki.server_cert.display().to_string()),
            &format!("cert = {}", m("server.pem")),
            1,
        )
        .replacen(
            &format!(
                "public_key = {:?}",
                env.pki.token_public_key.display().to_string()
            ),
            &format!("public_key = {}", m("idp.pem")),
            1,
        );
    let path = env.write_config("no-secrets.toml", &text);
    let p = path.to_str().expect("path");
    let questions = env.dir.path().join("questions.jsonl");
    std::fs::write(
        &questions,
        format!(
            "{{\"role\":\"social_worker\",\"agency\":{:?},\"category\":\"identity.core\",\"purpose\":\"safeguarding\"}}\n",
            env.agency_of("social_care")
        ),
    )
    .expect("questions");
    let q = questions.to_str().expect("path");

    // The policy commands read the policy and the agencies; the audit check reads the database.
    let agency = env.agency_of("social_care");
    for cmd in [
        vec!["policy", "lint", "-c", p],
        vec![
            "policy",
            "explain",
            "-c",
            p,
            "--role",
            "social_worker",
            "--agency",
            &agency,
            "--category",
            "identity.core",
            "--purpose",
            "safeguarding",
        ],
        vec!["policy", "check", "-c", p, q],
        vec!["audit", "verify", "-c", p],
    ] {
        let (code, out, err) = run_weft(&cmd);
        assert_eq!(code, 0, "{cmd:?}: {out}{err}");
    }
    // Serving, and checking the whole configuration, still need them, and say which.
    for cmd in [vec!["config", "check", "-c", p], vec!["serve", "-c", p]] {
        let (code, _, err) = run_weft(&cmd);
        assert_ne!(code, 0, "{cmd:?}");
        assert!(err.contains("tls.cert"), "{cmd:?}: {err}");
    }
    // A policy file missing is still an error for the policy commands.
    let no_policy = env.write_config(
        "no-policy.toml",
        &text.replacen("policy.csv", "no-such-policy.csv", 1),
    );
    let (code, _, err) = run_weft(&["policy", "lint", "-c", no_policy.to_str().expect("path")]);
    assert_ne!(code, 0);
    assert!(err.contains("policy.policy"), "{err}");
}
