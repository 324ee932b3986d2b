use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn servers(routes: &[Option<&str>]) -> Vec<ServerIdentity> {
    routes
        .iter()
        .enumerate()
        .map(|(index, route)| ServerIdentity {
            route: route.map(str::to_string),
            stable_id: format!("http://198.18.1.{}:8000", index + 2),
        })
        .collect()
}

fn route_suffix(cookie: Option<&str>, path_param: Option<&str>, strip_route: bool) -> StickyPolicy {
    let config = StickyConfig::RouteSuffix {
        cookie: cookie.map(str::to_string),
        path_param: path_param.map(str::to_string),
        strip_route,
    };
    StickyPolicy::new(
        &config,
        &servers(&[Some("r1"), Some("r2"), Some("r-3")]),
        None,
    )
    .expect("a valid route-suffix policy")
}

fn insert_with(key: &[u8], servers: &[ServerIdentity]) -> StickyPolicy {
    let config = StickyConfig::Insert {
        cookie: "balancer_sticky".into(),
        key: crate::config::StickyKey::Inline(String::from_utf8_lossy(key).into_owned()),
    };
    StickyPolicy::new(&config, servers, Some(key)).expect("a valid insert policy")
}

fn insert() -> StickyPolicy {
    insert_with(KEY, &servers(&[Some("a"), None, None]))
}

fn headers(name: HeaderName, fields: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for field in fields {
        map.append(
            name.clone(),
            HeaderValue::from_str(field).expect("a valid test field"),
        );
    }
    map
}

fn fields(map: &HeaderMap, name: HeaderName) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

#[test]
fn route_suffix_cookies_route_and_strip() {
    // (Cookie fields, stuck server, Cookie fields the app gets)
    let cases: &[(&[&str], Option<usize>, &[&str])] = &[
        (&["sessionid=abc.r2"], Some(1), &["sessionid=abc"]),
        (&["sessionid=abc.r-3"], Some(2), &["sessionid=abc"]),
        (&["sessionid=abc"], None, &["sessionid=abc"]),
        (&["sessionid=abc.zz"], None, &["sessionid=abc.zz"]),
        (&["sessionid=abc.R1"], None, &["sessionid=abc.R1"]),
        (&["sessionid=a.b.r1"], Some(0), &["sessionid=a.b"]),
        (&["sessionid=a.r2.x"], None, &["sessionid=a.r2.x"]),
        (&["sessionid=.r1"], Some(0), &["sessionid="]),
        (&["sessionid=\"abc.r1\""], Some(0), &["sessionid=\"abc\""]),
        (
            &["csrftoken=x.r1; sessionid=abc.r2;theme=dark"],
            Some(1),
            &["csrftoken=x.r1; sessionid=abc;theme=dark"],
        ),
        (
            &["csrftoken=x", "sessionid=abc.r2", "theme=dark.r1"],
            Some(1),
            &["csrftoken=x", "sessionid=abc", "theme=dark.r1"],
        ),
        // The first (most specific path) counts; every routed occurrence is stripped.
        (
            &["sessionid=new.r1; sessionid=old.r2"],
            Some(0),
            &["sessionid=new; sessionid=old"],
        ),
        (
            &["sessionid=new.r2", "sessionid=old.r1"],
            Some(1),
            &["sessionid=new", "sessionid=old"],
        ),
        (
            &["sessionid=; sessionid=x.r-3"],
            Some(2),
            &["sessionid=; sessionid=x"],
        ),
        (
            &["sessionid=x.nope; sessionid=y.r1"],
            None,
            &["sessionid=x.nope; sessionid=y"],
        ),
        (
            &["xsessionid=abc.r1; Sessionid=abc.r1"],
            None,
            &["xsessionid=abc.r1; Sessionid=abc.r1"],
        ),
        (&[], None, &[]),
    ];
    let policy = route_suffix(Some("sessionid"), None, true);
    for (cookies, server, forwarded) in cases {
        let mut map = headers(COOKIE, cookies);
        let stuck = policy.on_request(&mut map, "/admin/");
        assert_eq!(stuck.server, *server, "server for Cookie {cookies:?}");
        assert_eq!(stuck.target, None, "no path parameter in the target");
        assert_eq!(
            fields(&map, COOKIE),
            *forwarded,
            "Cookie fields forwarded for {cookies:?}"
        );
    }
}

#[test]
fn route_suffix_without_strip_routes_but_leaves_the_value() {
    let policy = route_suffix(Some("JSESSIONID"), Some("jsessionid"), false);
    let cases: &[(&str, &str, Option<usize>)] = &[
        ("JSESSIONID=abc.r2; a=1", "/x", Some(1)),
        ("JSESSIONID=abc; a=1", "/x;jsessionid=abc.r-3", Some(2)),
        ("JSESSIONID=abc.r1", "/x;jsessionid=abc.zz", Some(0)),
    ];
    for (cookie, target, server) in cases {
        let mut map = headers(COOKIE, &[cookie]);
        let stuck = policy.on_request(&mut map, target);
        assert_eq!(stuck.server, *server, "server for {cookie:?} {target:?}");
        assert_eq!(stuck.target, None, "{target:?} is forwarded as is");
        assert_eq!(
            fields(&map, COOKIE),
            [*cookie],
            "the Cookie is forwarded as is"
        );
    }
    let mut set = headers(SET_COOKIE, &["JSESSIONID=abc.r2; Path=/"]);
    policy.on_response(&mut set, &StickyRequest::default(), 0, true, "");
    assert_eq!(
        fields(&set, SET_COOKIE),
        ["JSESSIONID=abc.r2; Path=/"],
        "the app writes its routes itself"
    );
}

#[test]
fn route_suffix_path_parameters() {
    // (target, stuck server, forwarded target or None when unchanged)
    let cases: &[(&str, Option<usize>, Option<&str>)] = &[
        (
            "/cart;jsessionid=abc.r1",
            Some(0),
            Some("/cart;jsessionid=abc"),
        ),
        (
            "/cart;jsessionid=abc.r2?next=/x;jsessionid=q.r1",
            Some(1),
            Some("/cart;jsessionid=abc?next=/x;jsessionid=q.r1"),
        ),
        (
            "/shop;jsessionid=abc.r-3/cart/",
            Some(2),
            Some("/shop;jsessionid=abc/cart/"),
        ),
        (
            "/shop;v=1;jsessionid=a.b.r2;x=y/cart",
            Some(1),
            Some("/shop;v=1;jsessionid=a.b;x=y/cart"),
        ),
        ("/cart;jsessionid=abc", None, None),
        ("/cart;jsessionid=abc.r9", None, None),
        ("/cart?jsessionid=abc.r1", None, None),
        ("/cart;JSESSIONID=abc.r1", None, None),
        (
            "/a;jsessionid=x.r2/b;jsessionid=y.r1",
            Some(1),
            Some("/a;jsessionid=x/b;jsessionid=y"),
        ),
        ("/", None, None),
    ];
    let policy = route_suffix(None, Some("jsessionid"), true);
    for (target, server, forwarded) in cases {
        let mut map = HeaderMap::new();
        let stuck = policy.on_request(&mut map, target);
        assert_eq!(stuck.server, *server, "server for {target:?}");
        assert_eq!(stuck.target.as_deref(), *forwarded, "target for {target:?}");
    }
}

#[test]
fn route_suffix_path_parameter_wins_over_the_cookie() {
    let policy = route_suffix(Some("sid"), Some("sid"), true);
    let cases: &[(&str, &str, Option<usize>)] = &[
        ("/x;sid=abc.r2", "sid=abc.r1", Some(1)),
        ("/x;sid=abc", "sid=abc.r1", Some(0)),
        ("/x;sid=abc.zz", "sid=abc.r-3", Some(2)),
        ("/x", "sid=abc", None),
    ];
    for (target, cookie, server) in cases {
        let mut map = headers(COOKIE, &[cookie]);
        let stuck = policy.on_request(&mut map, target);
        assert_eq!(
            stuck.server, *server,
            "server for {target:?} with {cookie:?}"
        );
        let app_cookie = fields(&map, COOKIE);
        assert!(
            app_cookie.iter().all(|field| !field.contains(".r")),
            "routes stripped from {app_cookie:?}"
        );
    }
}

#[test]
fn route_suffix_set_cookie_gets_the_route_of_the_server() {
    // (Set-Cookie fields, served index, fields sent to the client)
    let cases: &[(&[&str], usize, &[&str])] = &[
        (
            &[
                "sessionid=abc; expires=Thu, 01 Jan 2099 00:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax",
            ],
            1,
            &[
                "sessionid=abc.r2; expires=Thu, 01 Jan 2099 00:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax",
            ],
        ),
        (&["sessionid=abc"], 2, &["sessionid=abc.r-3"]),
        (
            &["sessionid = \"abc\" ;Path=/"],
            0,
            &["sessionid = \"abc.r1\" ;Path=/"],
        ),
        (&["sessionid=a.b; Path=/"], 0, &["sessionid=a.b.r1; Path=/"]),
        // Another server's route: the session moved.
        (
            &["sessionid=abc.r1; Path=/"],
            1,
            &["sessionid=abc.r2; Path=/"],
        ),
        // Already this server's route.
        (
            &["sessionid=abc.r2; Path=/"],
            1,
            &["sessionid=abc.r2; Path=/"],
        ),
        // Deletions.
        (
            &["sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"],
            0,
            &["sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"],
        ),
        (
            &["sessionid=abc; Max-Age=0"],
            0,
            &["sessionid=abc; Max-Age=0"],
        ),
        (&["sessionid=; Path=/"], 0, &["sessionid=; Path=/"]),
        // Other cookies, and several fields.
        (
            &[
                "csrftoken=tok; Path=/",
                "sessionid=abc; Path=/",
                "messages=m; Path=/",
            ],
            1,
            &[
                "csrftoken=tok; Path=/",
                "sessionid=abc.r2; Path=/",
                "messages=m; Path=/",
            ],
        ),
        (
            &["Sessionid=abc", "sessionidx=abc"],
            0,
            &["Sessionid=abc", "sessionidx=abc"],
        ),
        (
            &["sessionid=a", "sessionid=b"],
            0,
            &["sessionid=a.r1", "sessionid=b.r1"],
        ),
        // A server index the pool does not have: nothing to append.
        (&["sessionid=abc"], 7, &["sessionid=abc"]),
        (&[], 0, &[]),
    ];
    let policy = route_suffix(Some("sessionid"), None, true);
    for (set_cookies, served, sent) in cases {
        let mut map = headers(SET_COOKIE, set_cookies);
        map.append("content-type", HeaderValue::from_static("text/html"));
        policy.on_response(&mut map, &StickyRequest::default(), *served, true, "/app");
        assert_eq!(
            fields(&map, SET_COOKIE),
            *sent,
            "Set-Cookie {set_cookies:?} served by {served}"
        );
        assert_eq!(map["content-type"], "text/html", "other headers stay");
    }
}

#[test]
fn route_suffix_round_trip_the_app_sees_its_own_value() {
    let policy = route_suffix(Some("sessionid"), None, true);
    let mut response = headers(SET_COOKIE, &["sessionid=k3y; Path=/; HttpOnly"]);
    policy.on_response(&mut response, &StickyRequest::default(), 2, false, "");
    let set = fields(&response, SET_COOKIE);
    let jar = set[0].split(';').next().unwrap_or_default().to_string();
    let mut request = headers(COOKIE, &[&jar]);
    let stuck = policy.on_request(&mut request, "/");
    assert_eq!(
        stuck.server,
        Some(2),
        "the cookie {jar:?} leads back to server 2"
    );
    assert_eq!(fields(&request, COOKIE), ["sessionid=k3y"]);
}

#[test]
fn insert_round_trip_and_attributes() {
    let policy = insert();
    // (served, https, public prefix, expected attributes after the value)
    let cases: &[(usize, bool, &str, &str)] = &[
        (0, false, "", "; Path=/; HttpOnly; SameSite=Lax"),
        (1, true, "", "; Path=/; HttpOnly; SameSite=Lax; Secure"),
        (
            2,
            true,
            "/app",
            "; Path=/app; HttpOnly; SameSite=Lax; Secure",
        ),
        (2, false, "/app/", "; Path=/app; HttpOnly; SameSite=Lax"),
        (0, false, "/", "; Path=/; HttpOnly; SameSite=Lax"),
        (1, false, "/a;b", "; Path=/; HttpOnly; SameSite=Lax"),
        (1, false, "app", "; Path=/; HttpOnly; SameSite=Lax"),
    ];
    for (served, https, prefix, attributes) in cases {
        let mut response = headers(SET_COOKIE, &["csrftoken=t; Path=/"]);
        policy.on_response(
            &mut response,
            &StickyRequest::default(),
            *served,
            *https,
            prefix,
        );
        let set = fields(&response, SET_COOKIE);
        assert_eq!(set.len(), 2, "the app's cookie and the sticky one: {set:?}");
        assert_eq!(
            set[0], "csrftoken=t; Path=/",
            "the app's cookie stays first and as is"
        );
        let (pair, rest) = set[1].split_at(set[1].find(';').unwrap_or(set[1].len()));
        assert_eq!(
            rest, *attributes,
            "attributes for https={https} prefix={prefix:?}"
        );
        let value = pair
            .strip_prefix("balancer_sticky=")
            .unwrap_or_else(|| panic!("{pair:?} sets balancer_sticky"));
        assert!(!value.contains("198.18"), "{value:?} leaks no address");

        let mut request = headers(COOKIE, &[&format!("csrftoken=t; {pair}; theme=x")]);
        let stuck = policy.on_request(&mut request, "/");
        assert_eq!(
            stuck.server,
            Some(*served),
            "the cookie {pair:?} leads back"
        );
        assert_eq!(
            fields(&request, COOKIE),
            ["csrftoken=t; theme=x"],
            "the sticky cookie is not forwarded to the app"
        );
    }
}

#[test]
fn insert_sets_a_cookie_only_when_the_session_is_not_already_there() {
    let policy = insert();
    let cookie_for = |server: usize| {
        let mut response = HeaderMap::new();
        policy.on_response(&mut response, &StickyRequest::default(), server, false, "");
        let set = fields(&response, SET_COOKIE);
        set[0].split(';').next().unwrap_or_default().to_string()
    };
    // (the request's sticky cookie's server, served by, a new Set-Cookie for)
    let cases: &[(Option<usize>, usize, Option<usize>)] = &[
        (Some(0), 0, None),
        (Some(2), 2, None),
        // The sticky server was down: another one answered, the cookie follows.
        (Some(0), 1, Some(1)),
        (None, 2, Some(2)),
    ];
    for (carried, served, expected) in cases {
        let mut request = match carried {
            Some(server) => headers(COOKIE, &[&cookie_for(*server)]),
            None => HeaderMap::new(),
        };
        let stuck = policy.on_request(&mut request, "/");
        assert_eq!(stuck.server, *carried, "a valid cookie for {carried:?}");
        let mut response = HeaderMap::new();
        policy.on_response(&mut response, &stuck, *served, false, "");
        let set = fields(&response, SET_COOKIE);
        let expected: Vec<String> = expected
            .iter()
            .map(|server| format!("{}; Path=/; HttpOnly; SameSite=Lax", cookie_for(*server)))
            .collect();
        assert_eq!(set, expected, "carried {carried:?}, served by {served}");
    }
}

#[test]
fn insert_never_trusts_an_unverifiable_cookie() {
    let policy = insert();
    let mut response = HeaderMap::new();
    policy.on_response(&mut response, &StickyRequest::default(), 1, false, "");
    let set = fields(&response, SET_COOKIE);
    let valid = set[0]
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("balancer_sticky="))
        .unwrap_or_default()
        .to_string();
    let (payload, tag) = valid.rsplit_once('.').unwrap_or_default();
    let mut flipped_tag = tag.to_string();
    let last = if tag.ends_with('A') { "Q" } else { "A" };
    flipped_tag.replace_range(tag.len() - 1.., last);
    let mut flipped_first = tag.to_string();
    let first = if tag.starts_with('A') { "B" } else { "A" };
    flipped_first.replace_range(..1, first);

    let other_key = insert_with(
        b"another key of 32 bytes, really",
        &servers(&[Some("a"), None, None]),
    );
    let mut other_response = HeaderMap::new();
    other_key.on_response(&mut other_response, &StickyRequest::default(), 1, false, "");
    let foreign = fields(&other_response, SET_COOKIE)[0]
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("balancer_sticky="))
        .unwrap_or_default()
        .to_string();

    let forged_ids: Vec<String> = ["v1.a", "v1.~AAAAAAAAAAAA", "v2.a"]
        .iter()
        .map(|payload| format!("{payload}.{tag}"))
        .collect();
    let mut cases: Vec<(String, &str)> = vec![
        (
            format!("{payload}.{flipped_tag}"),
            "tampered tag, last character",
        ),
        (
            format!("{payload}.{flipped_first}"),
            "tampered tag, first character",
        ),
        (
            format!("{payload}.{}", &tag[..tag.len() - 1]),
            "truncated tag",
        ),
        (valid[..valid.len() / 2].to_string(), "truncated value"),
        (format!("{payload}.{tag}A"), "tag with an extra character"),
        (format!("{payload}.{tag}="), "padded tag"),
        (format!("{payload}."), "empty tag"),
        (payload.to_string(), "no tag"),
        (foreign, "signed with another key"),
        ("a".into(), "a bare route"),
        ("garbage".into(), "garbage"),
        ("v1..".into(), "empty id and tag"),
        (".....".into(), "dots"),
        ("".into(), "empty"),
        ("\"\"".into(), "empty quotes"),
        (format!("v1.{}", "x".repeat(4000)), "huge"),
        (format!("x{valid}"), "prefixed"),
    ];
    for forged in &forged_ids {
        cases.push((forged.clone(), "another id with the valid tag"));
    }
    assert!(
        policy
            .on_request(
                &mut headers(COOKIE, &[&format!("balancer_sticky={valid}")]),
                "/"
            )
            .server
            == Some(1),
        "the untouched value {valid:?} verifies (else this test proves nothing)"
    );
    for (value, what) in &cases {
        let mut request = headers(COOKIE, &[&format!("balancer_sticky={value}; a=1")]);
        let stuck = policy.on_request(&mut request, "/");
        assert_eq!(
            stuck.server, None,
            "{what}: {value:?} must stick to nothing"
        );
        assert_eq!(fields(&request, COOKIE), ["a=1"], "{what}: not forwarded");
        let mut response = HeaderMap::new();
        policy.on_response(&mut response, &stuck, 0, false, "");
        assert_eq!(
            fields(&response, SET_COOKIE).len(),
            1,
            "{what}: a fresh cookie replaces it"
        );
    }
}

#[test]
fn insert_cookie_of_a_server_that_left_the_pool_sticks_to_nothing() {
    let before = insert_with(KEY, &servers(&[Some("a"), None, None]));
    let mut response = HeaderMap::new();
    before.on_response(&mut response, &StickyRequest::default(), 2, false, "");
    let pair = fields(&response, SET_COOKIE)[0]
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let stable_ids = servers(&[Some("a"), None, None]);
    // Reload cases: (servers after, where the cookie's server is now)
    let cases: &[(Vec<ServerIdentity>, Option<usize>)] = &[
        (stable_ids.clone(), Some(2)),
        // Reordered: the same server, another index.
        (vec![stable_ids[2].clone(), stable_ids[0].clone()], Some(0)),
        // Removed.
        (vec![stable_ids[0].clone(), stable_ids[1].clone()], None),
        // Same address, now with a route: another id.
        (
            vec![ServerIdentity {
                route: Some("c".into()),
                stable_id: stable_ids[2].stable_id.clone(),
            }],
            None,
        ),
    ];
    for (after, expected) in cases {
        let policy = insert_with(KEY, after);
        let stuck = policy.on_request(&mut headers(COOKIE, &[&pair]), "/");
        assert_eq!(
            stuck.server, *expected,
            "{pair:?} after reload to {after:?}"
        );
    }
}

#[test]
fn insert_the_first_valid_occurrence_counts() {
    let policy = insert();
    let cookie_for = |server: usize| {
        let mut response = HeaderMap::new();
        policy.on_response(&mut response, &StickyRequest::default(), server, false, "");
        fields(&response, SET_COOKIE)[0]
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let cases: Vec<(Vec<String>, Option<usize>)> = vec![
        (
            vec![format!("{}; {}", cookie_for(2), cookie_for(0))],
            Some(2),
        ),
        (vec![cookie_for(0), cookie_for(2)], Some(0)),
        (
            vec![format!("balancer_sticky=forged; {}", cookie_for(1))],
            Some(1),
        ),
    ];
    for (cookies, expected) in cases {
        let fields_in: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let mut request = headers(COOKIE, &fields_in);
        let stuck = policy.on_request(&mut request, "/");
        assert_eq!(stuck.server, expected, "server for {cookies:?}");
        assert!(request.get(COOKIE).is_none(), "every occurrence is removed");
    }
}

#[test]
fn new_refuses_what_validation_should_have_refused() {
    let route_suffix = |cookie: Option<&str>, path_param: Option<&str>| StickyConfig::RouteSuffix {
        cookie: cookie.map(str::to_string),
        path_param: path_param.map(str::to_string),
        strip_route: true,
    };
    let insert = StickyConfig::Insert {
        cookie: "balancer_sticky".into(),
        key: crate::config::StickyKey::File("/k".into()),
    };
    let bad_insert_name = StickyConfig::Insert {
        cookie: "bad name".into(),
        key: crate::config::StickyKey::File("/k".into()),
    };
    let routed = servers(&[Some("r1"), Some("r2")]);
    type Case<'a> = (StickyConfig, Vec<ServerIdentity>, Option<&'a [u8]>, &'a str);
    let cases: Vec<Case> = vec![
        (
            route_suffix(Some("sid"), None),
            servers(&[Some("r1"), None]),
            None,
            "no route",
        ),
        (
            route_suffix(None, None),
            routed.clone(),
            None,
            "neither cookie nor path_param",
        ),
        (
            route_suffix(Some("s;d"), None),
            routed.clone(),
            None,
            "cookie name",
        ),
        (
            route_suffix(None, Some("p=")),
            routed.clone(),
            None,
            "parameter name",
        ),
        (
            route_suffix(Some("sid"), None),
            servers(&[Some("r.1")]),
            None,
            "dotted route",
        ),
        (
            route_suffix(Some("sid"), None),
            servers(&[Some("")]),
            None,
            "empty route",
        ),
        (
            route_suffix(Some("sid"), None),
            servers(&[Some("r"), Some("r")]),
            None,
            "duplicate route",
        ),
        (insert.clone(), routed.clone(), None, "no key"),
        (insert.clone(), routed.clone(), Some(b"short"), "short key"),
        (
            bad_insert_name,
            routed.clone(),
            Some(KEY),
            "insert cookie name",
        ),
    ];
    for (config, servers, key, what) in cases {
        assert!(
            StickyPolicy::new(&config, &servers, key).is_err(),
            "{what}: must be refused"
        );
    }
    assert!(
        StickyPolicy::new(
            &route_suffix(Some("sid"), Some("jsessionid")),
            &routed,
            None
        )
        .is_ok()
    );
    assert!(StickyPolicy::new(&insert, &servers(&[None, None]), Some(KEY)).is_ok());
}

#[test]
fn arbitrary_input_never_panics() {
    // A fixed xorshift stream over bytes that matter to the parsers (and some that do not).
    let alphabet: &[u8] = b";=.\"/? \tsidr1r2-3aAv~_%\x80\xff";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let policies = [
        route_suffix(Some("sid"), Some("sid"), true),
        route_suffix(Some("sid"), None, false),
        insert(),
    ];
    for _ in 0..3000 {
        let len = (next() % 40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let Ok(field) = HeaderValue::from_bytes(&bytes) else {
            continue;
        };
        let target = String::from_utf8_lossy(&bytes).into_owned();
        for policy in &policies {
            let mut request = HeaderMap::new();
            request.append(COOKIE, field.clone());
            request.append(COOKIE, field.clone());
            let stuck = policy.on_request(&mut request, &target);
            assert!(stuck.server.is_none_or(|server| server < 3), "{bytes:?}");
            let mut response = HeaderMap::new();
            response.append(SET_COOKIE, field.clone());
            for served in [0, 1, 2, 3, usize::MAX] {
                policy.on_response(&mut response, &stuck, served, true, &target);
            }
        }
    }
}

/// The texts of the errors that are assembled from parts, against the `format!` that made them
/// when they were strings.
#[test]
fn error_texts_are_those_of_the_string_errors() {
    assert_eq!(
        StickyError::NoRoute {
            server: "http://10.0.0.1:80".to_string(),
            index: 1,
        }
        .to_string(),
        format!(
            "server {} (servers[{}]) has no route, which route-suffix stickiness needs",
            "http://10.0.0.1:80", 1
        )
    );
    assert_eq!(
        StickyError::ShortKey(5).to_string(),
        format!(
            "the sticky key has {} bytes; at least {} are needed",
            5,
            StickyConfig::MIN_KEY_BYTES
        )
    );
}
