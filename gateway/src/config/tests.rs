//! The configuration's tests: defaults, loading (TOML, environment,
//! files) and validation.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The smallest valid auth set-up, so tests can focus on other keys.
const SECRET: &str = "auth.secret = \"0123456789abcdef0123456789abcdef\"\n";

fn load(toml: &str) -> Result<Config, ConfigError> {
    Config::from_sources(Some(toml), &[])
}

fn invalid(toml: &str) -> String {
    match load(toml) {
        Err(ConfigError::Invalid(msg)) => msg,
        other => panic!("expected Invalid for {toml:?}, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_contract() {
    let c = Config::default();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin_listen, "127.0.0.1:9091".parse().unwrap());
    assert_eq!(c.node_id, None);
    assert_eq!(c.redis.url, vec!["redis://127.0.0.1:6379"]);
    assert_eq!(c.auth.algorithm, "HS256");
    assert_eq!(c.auth.secret, None);
    assert_eq!(c.auth.public_key_file, None);
    assert_eq!(c.auth.issuer, None);
    assert_eq!(c.auth.audience, None);
    assert_eq!(c.auth.leeway_s, 30);
    assert!(!c.auth.allow_anonymous);
    assert!(!c.auth.dev_tokens);
    assert_eq!(c.admin.api_key, None);
    assert!(c.origins.is_empty());
    assert_eq!(c.limits.max_frame_bytes, 65536);
    assert_eq!(c.limits.max_rooms_per_conn, 100);
    assert_eq!(c.limits.send_queue, 1024);
    assert_eq!(c.limits.send_queue_bytes, 1_048_576);
    assert_eq!(c.limits.ping_interval_s, 25);
    assert_eq!(c.limits.idle_timeout_s, 60);
    assert_eq!(c.limits.max_conns_per_user, 5);
    assert_eq!(c.limits.max_conns_per_ip, 20);
    assert_eq!(c.limits.max_preauth_per_ip, 20);
    assert_eq!(c.limits.max_conns, 0, "0: from the open-file limit");
    assert_eq!(c.node.lease_ms, 5000);
    assert!(c.namespaces.is_empty());
}

#[test]
fn empty_file_gives_defaults_except_that_hs256_needs_a_secret() {
    // Defaults alone have no secret: refused, with a helpful message.
    let msg = match Config::from_sources(None, &[]) {
        Err(ConfigError::Invalid(msg)) => msg,
        other => panic!("{other:?}"),
    };
    assert!(msg.contains("needs auth.secret"), "{msg}");
    // An empty file plus a secret from the environment is the default.
    let c = Config::from_sources(Some(""), &env(&[("BROKER_AUTH__SECRET", "s3cret")])).unwrap();
    let expected = Config {
        auth: AuthConfig {
            secret: Some("s3cret".into()),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(c, expected);
    // Dev mode needs nothing else.
    let c = Config::from_sources(None, &env(&[("BROKER_AUTH__DEV_TOKENS", "true")])).unwrap();
    assert!(c.auth.dev_tokens);
}

#[test]
fn full_file_is_read() {
    let c = load(
        r#"
        listen = "0.0.0.0:80"
        admin_listen = "127.0.0.1:9000"
        node_id = "gw-east-1"
        origins = ["https://example.com", "http://localhost:3000"]
        [redis]
        url = ["redis://a:7000", "redis://b:7001"]
        [auth]
        algorithm = "HS512"
        secret = "k"
        issuer = "me"
        audience = "you"
        leeway_s = 5
        allow_anonymous = true
        [admin]
        api_key = "adm"
        [limits]
        max_frame_bytes = 1000
        max_rooms_per_conn = 3
        send_queue = 16
        ping_interval_s = 10
        idle_timeout_s = 30
        max_conns_per_user = 2
        max_conns_per_ip = 4
        max_conns = 1000
        [node]
        lease_ms = 300
        presence_grace_ms = 15000
        [namespaces.chat]
        history = 100
        rate = { count = 20, period_s = 10, burst = 5 }
        max_payload = 16384
        [namespaces.orders]
        join = "claim"
        publish = "server"
        history = 50
        [namespaces.admin]
        join = "roles"
        roles = ["admin"]
        publish = "roles"
        presence = false
        join_leave = false
        "#,
    )
    .unwrap();
    assert_eq!(c.listen, "0.0.0.0:80".parse().unwrap());
    assert_eq!(c.admin_listen.port(), 9000);
    assert_eq!(c.node_id(), "gw-east-1");
    assert_eq!(c.origins.len(), 2);
    assert_eq!(c.redis.url, vec!["redis://a:7000", "redis://b:7001"]);
    assert_eq!(c.auth.algorithm, "HS512");
    assert_eq!(c.auth.issuer.as_deref(), Some("me"));
    assert_eq!(c.auth.audience.as_deref(), Some("you"));
    assert_eq!(c.auth.leeway_s, 5);
    assert!(c.auth.allow_anonymous);
    assert_eq!(c.admin.api_key.as_deref(), Some("adm"));
    assert_eq!(
        c.limits,
        Limits {
            max_frame_bytes: 1000,
            max_rooms_per_conn: 3,
            send_queue: 16,
            send_queue_bytes: 1_048_576,
            max_preauth_per_ip: 20,
            max_conns: 1000,
            ipv6_prefix_len: 64,
            requests: RateConfig {
                count: 200,
                period_s: 10,
                burst: 50,
            },
            ping_interval_s: 10,
            idle_timeout_s: 30,
            max_conns_per_user: 2,
            max_conns_per_ip: 4,
        }
    );
    assert_eq!(c.node.lease_ms, 300);
    assert_eq!(c.node.presence_grace_ms, 15000);

    let chat = c.namespace("chat");
    assert_eq!(chat.join, JoinPolicy::Public);
    assert_eq!(chat.publish, PublishPolicy::Members);
    assert!(chat.presence && chat.join_leave);
    assert_eq!((chat.history, chat.history_ttl_s), (100, 300));
    assert_eq!(
        chat.rate,
        Some(RateConfig {
            count: 20,
            period_s: 10,
            burst: 5
        })
    );
    assert_eq!(chat.max_payload, 16384);

    let orders = c.namespace("orders");
    assert_eq!(orders.join, JoinPolicy::Claim);
    assert_eq!(orders.publish, PublishPolicy::Server);
    assert_eq!(orders.history, 50);

    let admin = c.namespace("admin");
    assert_eq!(admin.join, JoinPolicy::Roles);
    assert_eq!(admin.roles, vec!["admin"]);
    assert_eq!(admin.publish, PublishPolicy::Roles);
    assert!(!admin.presence && !admin.join_leave);
}

#[test]
fn namespaces_without_table_get_the_default_policy() {
    let c = load(SECRET).unwrap();
    assert_eq!(c.namespace("anything"), Namespace::default());
    assert_eq!(c.namespace("user"), Namespace::default());
    let d = Namespace::default();
    assert_eq!(d.join, JoinPolicy::Public);
    assert!(d.roles.is_empty());
    assert_eq!(d.publish, PublishPolicy::Members);
    assert!(d.presence && d.join_leave);
    assert_eq!((d.history, d.history_ttl_s), (0, 300));
    assert_eq!(d.rate, None);
    assert_eq!(d.max_payload, 65536);
    // A table that omits keys gets the same defaults for them.
    let c = load(&format!("{SECRET}[namespaces.x]\nhistory = 3\n")).unwrap();
    assert_eq!(
        c.namespace("x"),
        Namespace {
            history: 3,
            ..Namespace::default()
        }
    );
}

#[test]
fn env_overrides_file() {
    let toml = format!("{SECRET}[limits]\nsend_queue = 10\n[namespaces.chat]\nhistory = 5\n");
    let c = Config::from_sources(
        Some(&toml),
        &env(&[
            ("BROKER_LIMITS__SEND_QUEUE", "77"),
            ("BROKER_LISTEN", "0.0.0.0:1234"),
            ("BROKER_ADMIN_LISTEN", "127.0.0.1:4321"),
            ("BROKER_NODE_ID", "gw-x"),
            ("BROKER_NODE__LEASE_MS", "900"),
            ("BROKER_AUTH__ALLOW_ANONYMOUS", "yes"),
            ("BROKER_AUTH__SECRET", "123456"),
            ("BROKER_NAMESPACES__CHAT__RATE__COUNT", "4"),
            ("BROKER_NAMESPACES__CHAT__RATE__PERIOD_S", "1"),
            ("BROKER_NAMESPACES__CHAT__RATE__BURST", "2"),
            ("BROKER_NAMESPACES__CHAT__JOIN", "claim"),
            ("BROKER_ORIGINS", "https://a.example, https://b.example"),
            ("BROKER_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("OTHER_VAR", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.limits.send_queue, 77);
    assert_eq!(c.listen.port(), 1234);
    assert_eq!(c.admin_listen.port(), 4321);
    assert_eq!(c.node_id.as_deref(), Some("gw-x"));
    assert_eq!(c.node.lease_ms, 900);
    assert!(c.auth.allow_anonymous);
    // A numeric-looking secret stays a string.
    assert_eq!(c.auth.secret.as_deref(), Some("123456"));
    let chat = c.namespace("chat");
    assert_eq!(chat.history, 5, "file value kept beside env values");
    assert_eq!(chat.join, JoinPolicy::Claim);
    assert_eq!(
        chat.rate,
        Some(RateConfig {
            count: 4,
            period_s: 1,
            burst: 2
        })
    );
    assert_eq!(c.origins, vec!["https://a.example", "https://b.example"]);
    assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8", "127.0.0.1"]);
}

#[test]
fn redis_url_forms() {
    let one = Config::from_sources(
        Some(&format!("{SECRET}[redis]\nurl = \"redis://h:1\"\n")),
        &[],
    )
    .unwrap();
    assert_eq!(one.redis.url, vec!["redis://h:1"]);
    let list = Config::from_sources(
        Some(&format!(
            "{SECRET}[redis]\nurl = [\"redis://a:1\", \"redis://b:2\"]\n"
        )),
        &[],
    )
    .unwrap();
    assert_eq!(list.redis.url, vec!["redis://a:1", "redis://b:2"]);
    let from_env = Config::from_sources(
        Some(SECRET),
        &env(&[("BROKER_REDIS__URL", "redis://a:1,redis://b:2,redis://c:3")]),
    )
    .unwrap();
    assert_eq!(
        from_env.redis.url,
        vec!["redis://a:1", "redis://b:2", "redis://c:3"]
    );
    let single_env = Config::from_sources(
        Some(SECRET),
        &env(&[("broker_redis__url", "unix:///tmp/r.sock")]),
    )
    .unwrap();
    assert_eq!(single_env.redis.url, vec!["unix:///tmp/r.sock"]);
    let msg = invalid(&format!("{SECRET}[redis]\nurl = []\n"));
    assert!(msg.contains("at least one URL"), "{msg}");
    let msg = invalid(&format!("{SECRET}[redis]\nurl = \"http://user:pw@h\"\n"));
    assert!(msg.contains("redis.url"), "{msg}");
    assert!(!msg.contains("pw"), "password must not be echoed: {msg}");
}

#[test]
fn unrelated_broker_env_vars_are_ignored_but_typos_in_sections_are_not() {
    let c = Config::from_sources(
        Some(SECRET),
        &env(&[
            ("BROKER_MODULE", "/x/libbroker_module.so"),
            ("BROKER_MODULE_ARGS", "HISTORY chat 100 300"),
            ("BROKER_", "x"),
            ("BROKER_LIMITS____X", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.limits, Limits::default());
    match Config::from_sources(Some(SECRET), &env(&[("BROKER_LIMITS__SEND_QUEU", "1")])) {
        Err(ConfigError::Load(msg)) => assert!(msg.contains("send_queu"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_types_and_unknown_keys_are_load_errors() {
    for (toml, env_pairs, needle) in [
        ("bogus = 1\n", vec![], "bogus"),
        ("[limits]\nsend_queue = \"many\"\n", vec![], "send_queue"),
        ("[limits]\nnope = 1\n", vec![], "nope"),
        (
            "[namespaces.chat]\njoin = \"everyone\"\n",
            vec![],
            "everyone",
        ),
        (
            "[namespaces.chat]\nrate = { count = 1 }\n",
            vec![],
            "period_s",
        ),
        ("listen = \"not an address\"\n", vec![], "listen"),
        ("this is not toml", vec![], "TOML"),
        (
            "",
            vec![("BROKER_LIMITS__SEND_QUEUE", "-1")],
            "BROKER_LIMITS__SEND_QUEUE",
        ),
        (
            "",
            vec![("BROKER_AUTH__DEV_TOKENS", "maybe")],
            "BROKER_AUTH__DEV_TOKENS",
        ),
    ] {
        let text = format!("{SECRET}{toml}");
        match Config::from_sources(Some(&text), &env(&env_pairs)) {
            Err(ConfigError::Load(msg)) => {
                assert!(msg.contains(needle), "{toml:?}: {msg}")
            }
            other => panic!("{toml:?}: expected Load error, got {other:?}"),
        }
    }
}

#[test]
fn load_reads_a_file_and_reports_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, format!("{SECRET}[limits]\nsend_queue = 9\n")).unwrap();
    // The process environment may hold BROKER_* variables of the test
    // runner; only assert on a key that none of them plausibly sets.
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(
        c.auth.secret.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    let missing = dir.path().join("missing.toml");
    match Config::load(Some(&missing)) {
        Err(ConfigError::Load(msg)) => assert!(msg.contains("missing.toml"), "{msg}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, "[limits]\nsend_queue = \"x\"\n").unwrap();
    match Config::load(Some(&path)) {
        Err(ConfigError::Load(msg)) => assert!(msg.contains("gateway.toml"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn auth_validation() {
    let ok = [
        "[auth]\nsecret = \"s\"\n",
        "[auth]\nalgorithm = \"HS384\"\nsecret = \"s\"\n",
        "[auth]\nalgorithm = \"HS512\"\nallow_anonymous = true\n",
        "[auth]\ndev_tokens = true\n",
        "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"k.pem\"\n",
        "[auth]\nalgorithm = \"ES256\"\npublic_key_file = \"k.pem\"\n",
        "[auth]\njwks_file = \"jwks.json\"\n",
        "[auth]\nalgorithm = \"HS256\"\njwks_file = \"jwks.json\"\nissuer = \"i\"\n",
    ];
    for toml in ok {
        assert!(load(toml).is_ok(), "{toml:?}: {:?}", load(toml));
    }
    let bad = [
        (
            "[auth]\nalgorithm = \"none\"\nsecret = \"s\"\n",
            "auth.algorithm",
        ),
        ("[auth]\nalgorithm = \"PS256\"\n", "auth.algorithm"),
        ("[auth]\nalgorithm = \"HS256\"\n", "needs auth.secret"),
        (
            "[auth]\nalgorithm = \"RS256\"\n",
            "needs auth.public_key_file",
        ),
        (
            "[auth]\nalgorithm = \"ES256\"\nallow_anonymous = true\n",
            "needs auth.public_key_file",
        ),
        (
            "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"k\"\nsecret = \"s\"\n",
            "auth.secret is set",
        ),
        (
            "[auth]\nsecret = \"s\"\npublic_key_file = \"k\"\n",
            "auth.public_key_file is set",
        ),
        (
            "[auth]\nsecret = \"s\"\ndev_tokens = true\n",
            "auth.dev_tokens is refused when a real secret is configured",
        ),
        (
            "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"k\"\ndev_tokens = true\n",
            "auth.dev_tokens is refused when a real secret is configured",
        ),
        (
            "[auth]\nalgorithm = \"HS512\"\ndev_tokens = true\n",
            "HS256",
        ),
        ("[auth]\nsecret = \"\"\n", "auth.secret must not be empty"),
        ("[auth]\nsecret = \"s\"\nissuer = \"\"\n", "auth.issuer"),
        ("[auth]\nsecret = \"s\"\naudience = \"\"\n", "auth.audience"),
        (
            "[auth]\nsecret = \"s\"\nleeway_s = 100000\n",
            "auth.leeway_s",
        ),
        (
            "[auth]\njwks_file = \"jwks.json\"\nsecret = \"s\"\n",
            "auth.jwks_file cannot be combined with auth.secret or auth.public_key_file",
        ),
        (
            "[auth]\njwks_file = \"jwks.json\"\npublic_key_file = \"k.pem\"\n",
            "auth.jwks_file cannot be combined",
        ),
        (
            "[auth]\njwks_file = \"jwks.json\"\nalgorithm = \"RS256\"\n",
            "auth.algorithm is not used with auth.jwks_file",
        ),
        (
            "[auth]\njwks_file = \"jwks.json\"\ndev_tokens = true\n",
            "auth.dev_tokens is refused when a real secret is configured",
        ),
        (
            "[auth]\njwks_file = \"\"\n",
            "auth.jwks_file must not be empty",
        ),
    ];
    for (toml, needle) in bad {
        let msg = invalid(toml);
        assert!(msg.contains(needle), "{toml:?}: {msg}");
    }
}

#[test]
fn limits_and_lease_validation() {
    for key in [
        "max_frame_bytes",
        "max_rooms_per_conn",
        "send_queue",
        "ping_interval_s",
        "idle_timeout_s",
        "max_conns_per_user",
        "max_conns_per_ip",
        "max_preauth_per_ip",
    ] {
        let msg = invalid(&format!("{SECRET}[limits]\n{key} = 0\n"));
        assert!(
            msg.contains(&format!("limits.{key} must be greater than 0")),
            "{msg}"
        );
    }
    let msg = invalid(&format!("{SECRET}[limits]\nipv6_prefix_len = 129\n"));
    assert!(
        msg.contains("limits.ipv6_prefix_len must be at most 128"),
        "{msg}"
    );
    let msg = invalid(&format!(
        "{SECRET}[limits]\nping_interval_s = 60\nidle_timeout_s = 60\n"
    ));
    assert!(msg.contains("idle_timeout_s must be greater"), "{msg}");
    let msg = invalid(&format!("{SECRET}[node]\nlease_ms = 299\n"));
    assert!(msg.contains("node.lease_ms must be at least 300"), "{msg}");
    let msg = invalid(&format!("{SECRET}[node]\npresence_grace_ms = 3600001\n"));
    assert!(
        msg.contains("node.presence_grace_ms must be at most 3600000"),
        "{msg}"
    );
    let msg = invalid(&format!(
        "{SECRET}listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"\n"
    ));
    assert!(msg.contains("must differ"), "{msg}");
    // Port 0 twice is fine (tests bind ephemeral ports).
    assert!(load(&format!(
        "{SECRET}listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n"
    ))
    .is_ok());
}

#[test]
fn namespace_validation() {
    for (toml, needle) in [
        ("[namespaces.\"bad.name\"]\n", "namespace \"bad.name\""),
        ("[namespaces.\"\"]\n", "namespace \"\""),
        ("[namespaces.a]\njoin = \"roles\"\n", "non-empty roles"),
        ("[namespaces.a]\npublish = \"roles\"\n", "non-empty roles"),
        (
            "[namespaces.a]\njoin = \"roles\"\nroles = [\"\"]\n",
            "empty names",
        ),
        (
            "[namespaces.a]\nhistory = 5\nhistory_ttl_s = 0\n",
            "history_ttl_s",
        ),
        ("[namespaces.a]\nmax_payload = 0\n", "max_payload"),
        (
            "[namespaces.a]\nrate = { count = 0, period_s = 1, burst = 1 }\n",
            "rate",
        ),
        (
            "[namespaces.a]\nrate = { count = 1, period_s = 0, burst = 1 }\n",
            "rate",
        ),
        (
            "[namespaces.a]\nrate = { count = 1, period_s = 1, burst = 0 }\n",
            "rate",
        ),
    ] {
        let msg = invalid(&format!("{SECRET}{toml}"));
        assert!(msg.contains(needle), "{toml:?}: {msg}");
    }
    // roles also accepts a comma-separated string.
    let c = load(&format!(
        "{SECRET}[namespaces.a]\njoin = \"roles\"\nroles = \"admin, ops\"\n"
    ))
    .unwrap();
    assert_eq!(c.namespace("a").roles, vec!["admin", "ops"]);
    // history_ttl_s = 0 is fine when nothing is kept.
    assert!(load(&format!("{SECRET}[namespaces.a]\nhistory_ttl_s = 0\n")).is_ok());
}

#[test]
fn other_validation() {
    let msg = invalid(&format!("{SECRET}node_id = \"gw 1\"\n"));
    assert!(msg.contains("node_id"), "{msg}");
    let msg = invalid(&format!("{SECRET}origins = [\"https://a.example/\"]\n"));
    assert!(msg.contains("origins"), "{msg}");
    let msg = invalid(&format!("{SECRET}[admin]\napi_key = \"\"\n"));
    assert!(msg.contains("admin.api_key"), "{msg}");
    let msg = invalid(&format!("{SECRET}trusted_proxies = [\"lb.internal\"]\n"));
    assert!(msg.contains("trusted_proxies"), "{msg}");
}

#[test]
fn an_admin_listener_off_loopback_needs_an_api_key() {
    // Loopback: 127.0.0.0/8 and ::1 (also written IPv4-mapped).
    for addr in [
        "127.0.0.1:9091",
        "127.3.2.1:9091",
        "[::1]:9091",
        "[::ffff:127.0.0.1]:9091",
    ] {
        let c = load(&format!("{SECRET}admin_listen = \"{addr}\"\n"));
        assert!(c.is_ok(), "{addr}: {c:?}");
    }
    // Anything else, the wildcards included, is refused without a key...
    for addr in [
        "0.0.0.0:9091",
        "[::]:9091",
        "10.0.0.7:9091",
        "[2001:db8::1]:9091",
    ] {
        let msg = invalid(&format!("{SECRET}admin_listen = \"{addr}\"\n"));
        assert!(
            msg.contains(&format!(
                "admin_listen {} is not a loopback address: set admin.api_key",
                addr.parse::<std::net::SocketAddr>().unwrap()
            )),
            "{addr}: {msg}"
        );
        // ...and accepted with one, from the file or the environment.
        let c = load(&format!(
            "{SECRET}admin_listen = \"{addr}\"\n[admin]\napi_key = \"k\"\n"
        ));
        assert!(c.is_ok(), "{addr} with a key: {c:?}");
        let c = Config::from_sources(
            Some(SECRET),
            &env(&[
                ("BROKER_ADMIN_LISTEN", addr),
                ("BROKER_ADMIN__API_KEY", "k"),
            ]),
        );
        assert!(c.is_ok(), "{addr} with a key from the environment: {c:?}");
    }
}

#[test]
fn every_problem_is_listed() {
    let msg = invalid("[limits]\nsend_queue = 0\n[node]\nlease_ms = 1\n");
    assert!(msg.contains("needs auth.secret"), "{msg}");
    assert!(msg.contains("limits.send_queue"), "{msg}");
    assert!(msg.contains("node.lease_ms"), "{msg}");
    assert_eq!(msg.matches("; ").count(), 2, "{msg}");
}

#[test]
fn generated_node_ids_are_valid() {
    let c = Config::default();
    for _ in 0..100 {
        let id = c.node_id();
        assert_eq!(id.len(), 11, "{id}");
        assert!(id.starts_with("gw-"), "{id}");
        assert!(
            id[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
        assert!(broker::names::validate_node(&id).is_ok(), "{id}");
    }
    let named = Config {
        node_id: Some("gw-fixed".into()),
        ..Config::default()
    };
    assert_eq!(named.node_id(), "gw-fixed");
}

#[test]
fn example_config_file_is_valid() {
    let text = include_str!("../../../config/gateway.toml");
    let c = Config::from_sources(Some(text), &[])
        .unwrap_or_else(|e| panic!("config/gateway.toml: {e}"));
    let chat = c.namespace("chat");
    assert_eq!(
        (chat.history, chat.history_ttl_s, chat.max_payload),
        (100, 300, 16384)
    );
    assert_eq!(
        chat.rate,
        Some(RateConfig {
            count: 20,
            period_s: 10,
            burst: 5
        })
    );
    assert_eq!(c.namespace("orders").join, JoinPolicy::Claim);
    assert_eq!(c.namespace("orders").publish, PublishPolicy::Server);
    assert_eq!(c.namespace("orders").history, 50);
    assert_eq!(c.namespace("admin").join, JoinPolicy::Roles);
    assert_eq!(c.namespace("admin").roles, vec!["admin"]);
    assert_eq!(c.namespace("admin").publish, PublishPolicy::Roles);
    // Every other key of the example is the default, except dev tokens
    // (on, so that `make run` and the demo page work out of the box).
    let defaults = Config {
        auth: AuthConfig {
            dev_tokens: true,
            ..AuthConfig::default()
        },
        namespaces: c.namespaces.clone(),
        ..Config::default()
    };
    assert_eq!(c, defaults);
    // In production the secret comes from the environment and dev tokens
    // are switched off there too.
    let prod = Config::from_sources(
        Some(text),
        &env(&[
            ("BROKER_AUTH__SECRET", "0123456789abcdef0123456789abcdef"),
            ("BROKER_AUTH__DEV_TOKENS", "false"),
        ]),
    )
    .unwrap();
    assert!(!prod.auth.dev_tokens);
    match Config::from_sources(Some(text), &env(&[("BROKER_AUTH__SECRET", "x")])) {
        Err(ConfigError::Invalid(msg)) => {
            assert!(msg.contains("dev_tokens is refused"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn webhooks_defaults_file_and_environment() {
    let c = Config::default();
    assert_eq!(c.webhooks.url, None, "webhooks are off by default");
    assert_eq!(c.webhooks.events, EVENT_TYPES.to_vec());
    assert_eq!(c.webhooks.batch_max, 100);
    assert_eq!(c.webhooks.timeout_ms, 3000);
    assert_eq!(c.testing.webhook_claim_idle_ms, None);

    let toml = format!(
        "{SECRET}[webhooks]\nurl = \"http://hooks.local:8000/in\"\nsecret = \"s\"\nevents = [\"join\", \"leave\"]\nbatch_max = 10\n"
    );
    let c = load(&toml).unwrap();
    assert_eq!(
        c.webhooks.url.as_deref(),
        Some("http://hooks.local:8000/in")
    );
    assert_eq!(c.webhooks.events, ["join", "leave"]);
    assert_eq!(c.webhooks.batch_max, 10);

    let c = Config::from_sources(
        Some(SECRET),
        &env(&[
            ("BROKER_WEBHOOKS__URL", "http://127.0.0.1:9/x"),
            ("BROKER_WEBHOOKS__SECRET", "123"),
            ("BROKER_WEBHOOKS__EVENTS", "online, offline"),
            ("BROKER_WEBHOOKS__TIMEOUT_MS", "500"),
            ("BROKER_TESTING__WEBHOOK_CLAIM_IDLE_MS", "1500"),
        ]),
    )
    .unwrap();
    assert_eq!(c.webhooks.url.as_deref(), Some("http://127.0.0.1:9/x"));
    assert_eq!(c.webhooks.secret.as_deref(), Some("123"));
    assert_eq!(c.webhooks.events, ["online", "offline"]);
    assert_eq!(c.webhooks.timeout_ms, 500);
    assert_eq!(c.testing.webhook_claim_idle_ms, Some(1500));
}

#[test]
fn webhooks_validation() {
    let hook = |rest: &str| format!("{SECRET}[webhooks]\n{rest}\n");
    let msg = invalid(&hook("url = \"http://h/x\""));
    assert!(msg.contains("webhooks.secret is required"), "{msg}");
    let msg = invalid(&hook("url = \"http://h/x\"\nsecret = \"\""));
    assert!(msg.contains("webhooks.secret is required"), "{msg}");
    for bad in ["ftp://h/x", "h:80/x", "http://", "http:///x"] {
        let msg = invalid(&hook(&format!("url = \"{bad}\"\nsecret = \"s\"")));
        assert!(msg.contains("webhooks.url"), "{bad}: {msg}");
    }
    let msg = invalid(&hook("url = \"https://h/x\"\nsecret = \"s\""));
    assert!(msg.contains("https:// is not supported"), "{msg}");
    let msg = invalid(&hook("events = [\"join\", \"publish\"]"));
    assert!(msg.contains("\"publish\" is not one of"), "{msg}");
    let msg = invalid(&hook("events = []"));
    assert!(msg.contains("at least one type"), "{msg}");
    for batch in [0, MAX_WEBHOOK_BATCH + 1] {
        let msg = invalid(&hook(&format!("batch_max = {batch}")));
        assert!(msg.contains("webhooks.batch_max"), "{msg}");
    }
    for timeout in [0, MAX_WEBHOOK_TIMEOUT_MS + 1] {
        let msg = invalid(&hook(&format!("timeout_ms = {timeout}")));
        assert!(msg.contains("webhooks.timeout_ms"), "{msg}");
    }
    let msg = invalid(&format!("{SECRET}[testing]\nwebhook_claim_idle_ms = 0\n"));
    assert!(msg.contains("webhook_claim_idle_ms"), "{msg}");
    // Without a URL the other keys are still checked, and their
    // defaults pass.
    load(&hook("")).unwrap();
    load(&hook("url = \"http://127.0.0.1:8000\"\nsecret = \"s\"")).unwrap();
}
