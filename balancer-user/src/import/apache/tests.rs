//! Parsing, each directive's mapping, and the three example configs of
//! `tests/fixtures/apache/` (copies of the shared examples, so a fresh clone has them).

use std::path::Path;

use super::{Directive, import, parse};

/// The translation of `text`, which must be a valid config.
fn translate(text: &str) -> String {
    let output = import(text, "test.conf", Path::new("/etc/apache2")).expect("the config parses");
    assert_toml(&output);
    output
}

/// `text` inside a virtual host on *:80 named www.example.test.
fn in_vhost(text: &str) -> String {
    translate(&format!(
        "<VirtualHost *:80>\nServerName www.example.test\n{text}\n</VirtualHost>\n"
    ))
}

#[track_caller]
fn assert_has(output: &str, fragment: &str) {
    assert!(
        output.contains(fragment),
        "expected the output to contain\n{fragment}\n--- output:\n{output}"
    );
}

#[track_caller]
fn assert_lacks(output: &str, fragment: &str) {
    assert!(
        !output.contains(fragment),
        "expected the output not to contain\n{fragment}\n--- output:\n{output}"
    );
}

/// The output is a config the balancer's own reader and validator accept (as `check-config`
/// does, short of opening the files it names).
#[track_caller]
fn assert_toml(output: &str) {
    if let Err(err) = crate::config::Config::parse_in(output, "import.toml", Path::new("/")) {
        panic!("the output is not a valid config: {err}\n--- output:\n{output}");
    }
}

// ---- Parsing -----------------------------------------------------------------------------------

#[test]
fn parses_quotes_continuations_comments_and_nesting() {
    let text = "# a comment\n\
                <VirtualHost *:80>\n\
                \x20   ProxyPass \"/a b\" 'balancer://x/' \\\n\
                \x20       stickysession=s\n\
                \x20   <Location /x>\n\
                \x20       Header set X-Quote \"say \\\"hi\\\"\"\n\
                \x20   </Location>\n\
                </VirtualHost>\n";
    let parsed = parse(text).expect("parses");
    assert_eq!(parsed.len(), 1);
    let vhost = &parsed[0];
    assert!(vhost.is("virtualhost"));
    assert_eq!(
        (vhost.line, vhost.args.clone()),
        (2, vec!["*:80".to_string()])
    );
    let children = vhost.children.as_ref().expect("a section");
    assert_eq!(
        children[0],
        Directive {
            line: 3,
            name: "ProxyPass".to_string(),
            args: vec![
                "/a b".to_string(),
                "balancer://x/".to_string(),
                "stickysession=s".to_string()
            ],
            text: "ProxyPass \"/a b\" 'balancer://x/' stickysession=s".to_string(),
            children: None,
        }
    );
    let location = &children[1];
    assert_eq!(location.line, 5);
    let header = &location.children.as_ref().expect("a section")[0];
    assert_eq!(header.args, ["set", "X-Quote", "say \"hi\""]);
}

#[test]
fn unbalanced_sections_and_quotes_are_errors_with_their_line() {
    let err = parse("<VirtualHost *:80>\nServerName a\n").expect_err("unclosed");
    assert_eq!(err.line, 1);
    assert!(err.message.contains("never closed"), "{err}");

    let err = parse("<VirtualHost *:80>\n</Location>\n").expect_err("mismatched");
    assert_eq!(err.line, 2);
    assert!(err.message.contains("opened at line 1"), "{err}");

    let err = parse("</Proxy>\n").expect_err("closes nothing");
    assert_eq!(err.line, 1);

    let err = parse("\nServerName \"a\n").expect_err("quote");
    assert_eq!(err.line, 2);
    assert!(err.message.contains("quote"), "{err}");
}

// ---- Virtual hosts, TLS, hosts ----------------------------------------------------------------

#[test]
fn server_names_become_allowed_hosts_with_the_first_vhost_note() {
    let output = translate(
        "<VirtualHost *:8080>\nServerName www.example.test:8080\nServerAlias example.test *.example.test\n</VirtualHost>\n",
    );
    assert_has(&output, "name = \"port-8080\"\nbind = \"0.0.0.0:8080\"\n");
    assert_has(
        &output,
        "allowed_hosts = [\"www.example.test\", \"example.test\", \"*.example.test\"]",
    );
    assert_has(
        &output,
        "Apache would have served any other host name from the first <VirtualHost>",
    );
    assert_toml(&output);
}

#[test]
fn server_alias_wildcards_beyond_a_leading_star_are_comments() {
    let output = translate(
        "<VirtualHost *:80>\nServerName a.test\nServerAlias www.a.* *.b.test\n</VirtualHost>\n",
    );
    assert_has(
        &output,
        "# line 3: ServerAlias www.a.* *.b.test — not translated: www.a.*: a wildcard",
    );
    assert_has(&output, "allowed_hosts = [\"a.test\", \"*.b.test\"]");
}

#[test]
fn ssl_gives_tls_with_paths_relative_to_the_apache_file() {
    let output = translate(
        "<VirtualHost 198.18.0.1:443>\nServerName a.test\nSSLEngine on\nSSLCertificateFile certs/a.pem\nSSLCertificateKeyFile /abs/a.key\n</VirtualHost>\n",
    );
    assert_has(&output, "name = \"https\"\nbind = \"198.18.0.1:443\"\n");
    assert_has(
        &output,
        "tls = { certificates = [ { cert = \"/etc/apache2/certs/a.pem\", key = \"/abs/a.key\" } ] }",
    );
}

#[test]
fn two_vhosts_on_one_address_give_one_listener_and_routes_by_host() {
    let output = translate(
        "<Proxy balancer://a>\nBalancerMember http://198.18.1.1:80\n</Proxy>\n\
         <Proxy balancer://b>\nBalancerMember http://198.18.1.2:80\n</Proxy>\n\
         <VirtualHost *:80>\nServerName a.test\nProxyPass / balancer://a/\n</VirtualHost>\n\
         <VirtualHost *:80>\nServerName b.test\nServerAlias www.b.test\nProxyPass / balancer://b/\n</VirtualHost>\n",
    );
    assert_eq!(output.matches("[[listener]]").count(), 1, "{output}");
    assert_has(
        &output,
        "allowed_hosts = [\"a.test\", \"b.test\", \"www.b.test\"]",
    );
    assert_has(
        &output,
        "host = \"a.test\"\npath = \"/\"\nstrip_prefix = false\npool = \"a\"",
    );
    assert_has(
        &output,
        "host = \"b.test\"\npath = \"/\"\nstrip_prefix = false\npool = \"b\"",
    );
    assert_has(
        &output,
        "host = \"www.b.test\"\npath = \"/\"\nstrip_prefix = false\npool = \"b\"",
    );
    assert_toml(&output);
}

// ---- Balancers and members ---------------------------------------------------------------------

#[test]
fn member_parameters_map_to_server_and_pool_keys() {
    let output = in_vhost(
        "<Proxy balancer://app>\n\
         BalancerMember http://198.18.1.1:8000 route=a loadfactor=3 max=4 retry=5 ttl=120 disablereuse=On connectiontimeout=500ms timeout=30\n\
         BalancerMember http://198.18.1.2:8000 route=b status=+N\n\
         BalancerMember http://198.18.1.3:8000 route=c status=+D\n\
         BalancerMember http://198.18.1.4:8000 route=d status=+H\n\
         BalancerMember unix:/run/app.sock|http://localhost route=e\n\
         </Proxy>\nProxyPass / balancer://app/\n",
    );
    assert_has(
        &output,
        "{ url = \"http://198.18.1.1:8000\", weight = 3, route = \"a\", max_conns = 4 },",
    );
    assert_has(
        &output,
        "{ url = \"http://198.18.1.2:8000\", route = \"b\", state = \"draining\" },",
    );
    assert_has(
        &output,
        "{ url = \"http://198.18.1.3:8000\", route = \"c\", state = \"disabled\" },",
    );
    assert_has(
        &output,
        "{ url = \"http://198.18.1.4:8000\", route = \"d\", backup = true },",
    );
    assert_has(&output, "{ url = \"unix:/run/app.sock\", route = \"e\" },");
    assert_has(
        &output,
        "keepalive = { reuse = false, idle_timeout = \"120s\" }",
    );
    assert_has(&output, "retry = { after_failure = \"5s\" }");
    assert_has(
        &output,
        "timeouts = { connect = \"500ms\", response = \"30s\" }",
    );
    assert_lacks(&output, "— not translated");
    assert_toml(&output);
}

#[test]
fn untranslatable_member_parameters_are_comments_with_their_line() {
    let output = in_vhost(
        "<Proxy balancer://app>\nBalancerMember http://198.18.1.1:8000 ping=5 smax=3 status=+E\n\
         BalancerMember http://198.18.1.2:8000 retry=10\nBalancerMember http://198.18.1.3:8000 retry=5\n</Proxy>\n",
    );
    let line = "BalancerMember http://198.18.1.1:8000 ping=5 smax=3 status=+E";
    assert_has(
        &output,
        &format!("# line 4: {line} — not translated: ping (a probe"),
    );
    assert_has(
        &output,
        &format!("# line 4: {line} — not translated: the member parameter smax"),
    );
    assert_has(
        &output,
        &format!("# line 4: {line} — not translated: status flag E"),
    );
    assert_has(
        &output,
        "# line 6: BalancerMember http://198.18.1.3:8000 retry=5 — not translated: retry differs from line 5's",
    );
    assert_has(&output, "retry = { after_failure = \"10s\" }");
}

#[test]
fn lbmethod_and_stickysession_from_proxyset_or_proxypass() {
    let members = "BalancerMember http://198.18.1.1:80 route=1\nBalancerMember http://198.18.1.2:80 route=2\n";
    let output = in_vhost(&format!(
        "<Proxy balancer://app>\n{members}ProxySet lbmethod=bybusyness stickysession=JSESSIONID|jsessionid\n</Proxy>\nProxyPass / balancer://app/\n"
    ));
    assert_has(&output, "balance = \"least-conn\"");
    assert_has(
        &output,
        "sticky = { mode = \"route-suffix\", cookie = \"JSESSIONID\", path_param = \"jsessionid\", strip_route = false }",
    );

    let output = in_vhost(&format!(
        "<Proxy balancer://app>\n{members}</Proxy>\nProxyPass / balancer://app/ lbmethod=byrequests stickysession=sessionid nofailover=On\n"
    ));
    assert_has(
        &output,
        "balance = \"round-robin\"   # lbmethod=byrequests\n",
    );
    assert_has(
        &output,
        "sticky = { mode = \"route-suffix\", cookie = \"sessionid\", strip_route = false }",
    );
    assert_has(&output, "— not translated: nofailover=On");

    let output = in_vhost(&format!(
        "<Proxy balancer://app>\n{members}ProxySet lbmethod=bytraffic\n</Proxy>\nProxyPass / balancer://app/\n"
    ));
    assert_has(
        &output,
        "# line 6: ProxySet lbmethod=bytraffic — not translated: lbmethod=bytraffic",
    );
    assert_has(
        &output,
        "balance = \"round-robin\"   # lbmethod=byrequests (Apache's default)",
    );
}

#[test]
fn stickiness_without_routes_is_not_translated() {
    let output = in_vhost(
        "<Proxy balancer://app>\nBalancerMember http://198.18.1.1:80\n</Proxy>\nProxyPass / balancer://app/ stickysession=s\n",
    );
    assert_lacks(&output, "sticky = ");
    assert_has(
        &output,
        "# stickysession=s — not translated: a member has no route=",
    );
}

// ---- ProxyPass and what goes with it -----------------------------------------------------------

#[test]
fn proxypass_paths_map_to_route_paths_and_strip_prefix() {
    let pool = "<Proxy balancer://app>\nBalancerMember http://198.18.1.1:80\n</Proxy>\n";
    let output = in_vhost(&format!("{pool}ProxyPass /webapps/ balancer://app/\n"));
    assert_has(
        &output,
        "path = \"/webapps/\"\nstrip_prefix = true\npool = \"app\"",
    );
    let output = in_vhost(&format!(
        "{pool}ProxyPass /webapps balancer://app/webapps\n"
    ));
    assert_has(
        &output,
        "path = \"/webapps\"\nstrip_prefix = false\npool = \"app\"",
    );
    let output = in_vhost(&format!("{pool}ProxyPass /a balancer://app/b\n"));
    assert_has(
        &output,
        "# line 6: ProxyPass /a balancer://app/b — not translated: /a is forwarded as /b/…",
    );
    assert_lacks(&output, "[[route]]");
    let output = in_vhost("ProxyPass /api/ http://198.18.1.9:8000/\n");
    assert_has(&output, "strip_prefix = true\npool = \"198.18.1.9-8000\"");
    assert_has(&output, "[pool.\"198.18.1.9-8000\"]");
    let output = in_vhost("ProxyPass / balancer://missing/\n");
    assert_has(
        &output,
        "not translated: no <Proxy balancer://missing> defines its members",
    );
}

#[test]
fn location_proxypass_with_reverse_cookie_path_and_headers() {
    let output = in_vhost(
        "ProxyPreserveHost On\nHeader always set X-Frame-Options DENY\n\
         <Proxy balancer://app>\nBalancerMember http://198.18.1.1:80/webapps route=1\n</Proxy>\n\
         <Location /webapps>\nProxyPass balancer://app\nProxyPassReverse balancer://app\n\
         ProxyPassReverseCookiePath /webapps /webapps\nProxyPassReverseCookieDomain app.internal www.example.test\n\
         RequestHeader set X-Script-Name /webapps\nRequestHeader unset X-Debug\nHeader unset Server\n</Location>\n",
    );
    assert_has(
        &output,
        "listener = \"http\"\npath = \"/webapps\"\nstrip_prefix = false\npool = \"app\"\npreserve_host = true   # ProxyPreserveHost On\nrewrite_location = true   # ProxyPassReverse\nrewrite_cookie_path = true   # ProxyPassReverseCookiePath\n\
         rewrite_cookie_domain = { \"app.internal\" = \"www.example.test\" }\n\
         request_headers = { set = { \"X-Script-Name\" = \"/webapps\" }, unset = [\"X-Debug\"] }\n\
         response_headers = { set = { \"X-Frame-Options\" = \"DENY\" }, unset = [\"Server\"] }\n",
    );
    assert_toml(&output);
}

#[test]
fn preserve_host_is_stated_off_by_default_and_reverse_absent_is_false() {
    let output = in_vhost(
        "<Proxy balancer://app>\nBalancerMember http://198.18.1.1:80\n</Proxy>\nProxyPass / balancer://app/\n",
    );
    assert_has(
        &output,
        "preserve_host = false   # ProxyPreserveHost is Off unless set (Apache's default)",
    );
    assert_has(&output, "rewrite_location = false   # no ProxyPassReverse");
    assert_has(
        &output,
        "rewrite_cookie_path = false   # no ProxyPassReverseCookiePath",
    );
}

#[test]
fn forwarded_headers_and_header_forms_without_equivalent() {
    let output = in_vhost(
        "RequestHeader set X-Forwarded-Proto \"http\"\nRequestHeader unset X-Forwarded-For\nRequestHeader set X-Forwarded-Proto-Other https\n\
         Header append Vary Cookie\nRequestHeader set X-Client \"%{REMOTE_ADDR}s\"\n",
    );
    assert_has(
        &output,
        "# line 3: RequestHeader set X-Forwarded-Proto \"http\" — nothing to translate",
    );
    assert_has(
        &output,
        "# line 4: RequestHeader unset X-Forwarded-For — nothing to translate",
    );
    assert_has(
        &output,
        "# line 6: Header append Vary Cookie — not translated: only `set NAME VALUE`",
    );
    assert_has(
        &output,
        "# line 7: RequestHeader set X-Client \"%{REMOTE_ADDR}s\" — not translated: values with %{…}",
    );
}

#[test]
fn ssl_proxy_directives_give_the_pool_its_ca_or_a_comment() {
    let output = in_vhost(
        "SSLProxyEngine on\nSSLProxyCACertificateFile certs/members-ca.pem\nSSLProxyVerify none\n\
         <Proxy balancer://app>\nBalancerMember https://198.18.1.1:443\n</Proxy>\nProxyPass / balancer://app/\n",
    );
    assert_has(
        &output,
        "# line 3: SSLProxyEngine on — nothing to translate",
    );
    assert_has(
        &output,
        "# line 5: SSLProxyVerify none — not translated: balancer always verifies",
    );
    assert_has(
        &output,
        "tls_ca_file = \"/etc/apache2/certs/members-ca.pem\"   # SSLProxyCACertificateFile",
    );
    assert_lacks(&output, "set tls_ca_file to the members' CA");
    assert_toml(&output);
}

#[test]
fn remoteip_gives_trusted_proxies_and_headers() {
    let output =
        in_vhost("RemoteIPHeader X-Forwarded-For\nRemoteIPTrustedProxy 198.18.5.0/24 198.18.6.1\n");
    assert_has(
        &output,
        "trusted_proxies = [\"198.18.5.0/24\", \"198.18.6.1\"]\ntrusted_headers = [\"X-Forwarded-For\"]\n",
    );
}

#[test]
fn remoteip_values_without_equivalent_are_comments() {
    let output = in_vhost(
        "RemoteIPHeader CF-Connecting-IP\nRemoteIPTrustedProxy 198.18.5.0/24 lb.example.test 10.1\n",
    );
    assert_has(
        &output,
        "# line 3: RemoteIPHeader CF-Connecting-IP — not translated: balancer takes the client address",
    );
    assert_has(
        &output,
        "# line 4: RemoteIPTrustedProxy 198.18.5.0/24 lb.example.test 10.1 — not translated: lb.example.test:",
    );
    assert_has(
        &output,
        "# line 4: RemoteIPTrustedProxy 198.18.5.0/24 lb.example.test 10.1 — not translated: 10.1:",
    );
    assert_has(
        &output,
        "# line 4: RemoteIPTrustedProxy 198.18.5.0/24 lb.example.test 10.1 — not translated: without a RemoteIPHeader",
    );
    assert_lacks(&output, "trusted_proxies =");
    assert_lacks(&output, "trusted_headers =");

    // mod_remoteip without trusted proxies believes the header from anyone.
    let output = in_vhost("RemoteIPHeader X-Forwarded-For\n");
    assert_has(&output, "trusted_proxies = [\"0.0.0.0/0\", \"::/0\"]\n");

    let output =
        in_vhost("RemoteIPHeader X-Real-IP\nRemoteIPTrustedProxy lb.example.test 198.18.5.7\n");
    assert_has(
        &output,
        "trusted_proxies = [\"198.18.5.7\"]\ntrusted_headers = [\"X-Real-IP\"]\n",
    );
}

#[test]
fn other_directives_are_comments_with_their_line() {
    let output = translate(
        "Listen 80\n<IfModule mod_proxy.c>\n<VirtualHost *:80>\nServerName a.test\nDocumentRoot /var/www\nProxyRequests On\n</VirtualHost>\n</IfModule>\n",
    );
    assert_has(
        &output,
        "# line 1: Listen 80 — not translated: outside a <VirtualHost>",
    );
    assert_has(
        &output,
        "# line 5: DocumentRoot /var/www — not translated: no equivalent in balancer's config",
    );
    assert_has(
        &output,
        "# line 6: ProxyRequests On — not translated: balancer is never a forward proxy",
    );
    // <IfModule> contents count as present.
    assert_has(&output, "allowed_hosts = [\"a.test\"]");
}

// ---- The example configs -----------------------------------------------------------------------

fn example(name: &str) -> String {
    let text = match name {
        "sticky-http-https" => {
            include_str!("../../../../tests/fixtures/apache/sticky-http-https.conf")
        }
        "three-members" => include_str!("../../../../tests/fixtures/apache/three-members.conf"),
        "trusted-front" => include_str!("../../../../tests/fixtures/apache/trusted-front.conf"),
        _ => unreachable!("no example {name}"),
    };
    let output = import(text, name, Path::new("/srv/apache")).expect("the example parses");
    assert_toml(&output);
    output
}

#[test]
fn example_sticky_http_https() {
    let output = example("sticky-http-https");
    assert_has(&output, "name = \"http\"\nbind = \"0.0.0.0:80\"\n");
    assert_has(
        &output,
        "allowed_hosts = [\"www.example.test\", \"example.test\"]",
    );
    assert_has(
        &output,
        "name = \"https\"\nbind = \"0.0.0.0:443\"\ntls = { certificates = [ { cert = \"/srv/apache/certs/www.example.test.pem\", key = \"/srv/apache/certs/www.example.test.key\" } ] }\n",
    );
    assert_has(
        &output,
        "listener = \"http\"\npath = \"/webapps\"\nstrip_prefix = false\npool = \"django-http\"\npreserve_host = false",
    );
    assert_has(
        &output,
        "listener = \"https\"\npath = \"/webapps\"\nstrip_prefix = false\npool = \"django-https\"\npreserve_host = false",
    );
    assert_has(
        &output,
        "  { url = \"http://198.18.1.21:80\", route = \"http-1\" },\n  { url = \"http://198.18.1.22:80\", route = \"http-2\" },\n",
    );
    assert_has(
        &output,
        "  { url = \"https://198.18.1.21:443\", route = \"https-1\" },\n  { url = \"https://198.18.1.22:443\", weight = 2, route = \"https-2\" },\n",
    );
    assert_has(
        &output,
        "# balancer does, against the system's CAs: set tls_ca_file to the members' CA.",
    );
    assert_eq!(
        output
            .matches(
                "sticky = { mode = \"route-suffix\", cookie = \"sessionid\", strip_route = false }"
            )
            .count(),
        2,
        "{output}"
    );
    assert_lacks(&output, "— not translated");
}

#[test]
fn example_three_members() {
    let output = example("three-members");
    assert_has(&output, "allowed_hosts = [\"photos.example.test\"]");
    assert_has(
        &output,
        "path = \"/\"\nstrip_prefix = false\npool = \"django\"\npreserve_host = true",
    );
    assert_has(
        &output,
        "  { url = \"http://198.18.1.11:8000\" },\n  { url = \"http://198.18.1.12:8000\" },\n  { url = \"http://198.18.1.13:8000\" },\n",
    );
    assert_has(
        &output,
        "keepalive = { reuse = false, idle_timeout = \"120s\" }",
    );
    assert_has(&output, "retry = { after_failure = \"5s\" }");
    for line in 8..=10 {
        assert_has(
            &output,
            &format!("# line {line}: BalancerMember http://198.18.1.1"),
        );
    }
    assert_eq!(
        output.matches("not translated: ping").count(),
        3,
        "{output}"
    );
}

#[test]
fn example_trusted_front() {
    let output = example("trusted-front");
    assert_has(
        &output,
        "trusted_proxies = [\"198.18.5.0/24\"]\ntrusted_headers = [\"X-Forwarded-For\"]\n",
    );
    assert_has(
        &output,
        "# line 18: ProxyPass        /static/ ! — not translated:",
    );
    assert_has(
        &output,
        "# line 4: ProxyRequests Off — nothing to translate: balancer is a reverse proxy only",
    );
    assert_has(&output, "balance = \"least-conn\"");
    assert_has(
        &output,
        "  { url = \"http://198.18.1.31:8000\", route = \"a\" },\n  { url = \"http://198.18.1.32:8000\", route = \"b\", state = \"draining\" },\n  { url = \"http://198.18.1.33:8000\", route = \"c\", backup = true },\n",
    );
    assert_has(
        &output,
        "sticky = { mode = \"route-suffix\", cookie = \"SHOPSESSION\", strip_route = false }",
    );
    assert_has(&output, "timeouts = { response = \"30s\" }");
    assert_has(&output, "response_headers = { unset = [\"Server\"] }");
    assert_has(&output, "preserve_host = true");
}

#[test]
fn empty_pools_repeated_routes_and_reused_direct_targets_are_reported() {
    let output = translate(
        "<Proxy balancer://empty>\nBalancerMember ftp://x\n</Proxy>\n\
         <Proxy balancer://app>\nBalancerMember http://198.18.1.1:8000\n</Proxy>\n\
         <VirtualHost *:80>\nProxyPass / balancer://app/\n</VirtualHost>\n\
         <VirtualHost *:80>\nProxyPass / balancer://app/\nProxyPass /e/ balancer://empty/\nProxyPass /d/ http://198.18.1.9:8000/\n</VirtualHost>\n\
         <VirtualHost *:8080>\nProxyPass /d/ http://198.18.1.9:8000/ timeout=5\n</VirtualHost>\n",
    );
    assert_has(
        &output,
        "# line 11: ProxyPass / balancer://app/ — not translated: an earlier <VirtualHost> on this address already routes this path",
    );
    assert_has(
        &output,
        "# line 12: ProxyPass /e/ balancer://empty/ — not translated: balancer://empty has no member",
    );
    assert_has(
        &output,
        "# line 16: ProxyPass /d/ http://198.18.1.9:8000/ timeout=5 — not translated: the parameters of the first ProxyPass",
    );
    assert_lacks(&output, "[pool.empty]");
    assert_eq!(output.matches("[[route]]").count(), 3, "{output}");
}
