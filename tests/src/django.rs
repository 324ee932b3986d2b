//! A real Django site for the L7 tests: the project in `tests/django/` (configured the way
//! Django's docs say to run behind a TLS-terminating proxy, see its `settings.py` and
//! `wsgi.py`), run by gunicorn from the virtualenv `cargo xtask setup` creates.
//!
//! A [`DjangoSite`] is one site: its SQLite database (migrated, with a superuser), secret key,
//! public name and the proxies it trusts. [`DjangoSite::start_backend`] starts a gunicorn
//! backend of that site inside a namespace, on TCP addresses and/or unix sockets; every backend
//! of a site shares the database and the key, so a session made on one is valid on the others,
//! and each answers with `X-Backend: NAME`. Processes and files go away on drop.
//!
//! What the site answers (paths below its mount point):
//! - `/healthz/` "ok" (plain http allowed: the balancer's health check);
//! - `/meta/` JSON: every `HTTP_*` key of `request.META`, `REMOTE_ADDR`, `SCRIPT_NAME`,
//!   `PATH_INFO`, `wsgi.url_scheme`, `original_remote_addr` (the peer before the proxy
//!   middleware), and what Django derives: `is_secure`, `scheme`, `host`, `port`,
//!   `absolute_uri`, `path`, `backend`;
//! - `/redirect/?to=absolute|relative|unprefixed|backend` a 302 to `/target/` written four ways;
//! - `/target/` "target";
//! - `/session/` JSON `{count, backend}`, the count kept in the session;
//! - `/admin/` Django's admin ([`ADMIN_USER`] / [`ADMIN_PASSWORD`]).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};

use crate::{
    l7::{Client, NetnsProcess, Request, TempDir},
    netns::Netns,
    unique_suffix,
};

/// The Django release `cargo xtask setup` installs (5.2 is the LTS line).
pub const DJANGO_VERSION: &str = "5.2.19";
/// The gunicorn release `cargo xtask setup` installs.
pub const GUNICORN_VERSION: &str = "23.0.0";
/// The superuser every site is created with.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "balancer-test-password-1";

/// How long a backend may take from start to its first answer (Django loads on first request).
const BACKEND_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where project tools live (bpf-linker, the virtualenv): `$BALANCER_TOOLS_DIR`, else
/// `~/.cache/balancer/tools`, outside the work tree so fresh clones reuse them.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BALANCER_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/balancer/tools")
}

/// The virtualenv `cargo xtask setup` creates and the tests use: `$BALANCER_DJANGO_VENV`, else
/// `django-venv` in [`tools_dir`].
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("BALANCER_DJANGO_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => tools_dir().join("django-venv"),
    }
}

/// The Django project (`tests/django`, holding `manage.py` and the `webapp` package).
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("django")
}

/// `(django, gunicorn)` versions installed in the virtualenv at `venv`.
pub fn installed_versions(venv: &Path) -> anyhow::Result<(String, String)> {
    let python = venv.join("bin/python");
    ensure!(python.is_file(), "{} does not exist", python.display());
    let output = Command::new(&python)
        .args([
            "-c",
            "import django, gunicorn; print(django.get_version(), gunicorn.__version__)",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    ensure!(
        output.status.success(),
        "{} cannot import django and gunicorn: {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let (django, gunicorn) = printed
        .trim()
        .split_once(' ')
        .with_context(|| format!("{} printed {printed:?}", python.display()))?;
    Ok((django.to_string(), gunicorn.to_string()))
}

/// The virtualenv ([`venv_dir`]) if it holds the pinned [`DJANGO_VERSION`] and
/// [`GUNICORN_VERSION`]; otherwise an error that says to run `cargo xtask setup`.
pub fn checked_venv() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let versions = installed_versions(&venv).with_context(|| {
        format!(
            "the Django virtualenv at {} is missing or broken: run `cargo xtask setup` \
             (or set BALANCER_DJANGO_VENV)",
            venv.display()
        )
    })?;
    let wanted = (DJANGO_VERSION.to_string(), GUNICORN_VERSION.to_string());
    ensure!(
        versions == wanted,
        "the Django virtualenv at {} has Django {} and gunicorn {}, the tests pin {} and {}: \
         run `cargo xtask setup`",
        venv.display(),
        versions.0,
        versions.1,
        wanted.0,
        wanted.1
    );
    Ok(venv)
}

/// What differs between sites: the public name and origin, and who may forward.
#[derive(Debug, Clone)]
pub struct SiteSettings {
    /// The only name Django accepts (`ALLOWED_HOSTS`), e.g. `www.example.test`.
    pub public_host: String,
    /// The public origin (`CSRF_TRUSTED_ORIGINS`), e.g. `https://www.example.test:8443`.
    pub public_origin: String,
    /// Addresses or networks whose connections may set the client address and the prefix
    /// (X-Forwarded-For, X-Forwarded-Prefix), and `unix` for connections on a unix socket. The
    /// balancer's source address toward the backends goes here (on `lo`, that is the
    /// backend's own address), and any proxy in front of it whose entries in X-Forwarded-For
    /// are to be skipped.
    pub trusted_proxies: Vec<String>,
}

/// One Django site: a migrated database with [`ADMIN_USER`], a secret key, its settings. The
/// scratch directory (database, logs, sockets) is removed on drop.
pub struct DjangoSite {
    venv: PathBuf,
    dir: TempDir,
    settings: SiteSettings,
    secret: String,
}

impl DjangoSite {
    /// Checks the virtualenv ([`checked_venv`]), then creates the database (`manage.py
    /// migrate`) and the superuser (`manage.py createsuperuser --noinput`).
    pub fn create(settings: SiteSettings) -> anyhow::Result<DjangoSite> {
        let venv = checked_venv()?;
        let dir = TempDir::new("django")?;
        let site = DjangoSite {
            venv,
            dir,
            settings,
            secret: format!(
                "balancer-test-secret-{}-{}",
                unique_suffix(),
                std::process::id()
            ),
        };
        site.manage_with(&["migrate", "--noinput"], &[])
            .context("creating the site's database")?;
        site.manage_with(
            &[
                "createsuperuser",
                "--noinput",
                "--username",
                ADMIN_USER,
                "--email",
                "admin@example.test",
            ],
            &[("DJANGO_SUPERUSER_PASSWORD", ADMIN_PASSWORD)],
        )
        .context("creating the superuser")?;
        Ok(site)
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database every backend of the site uses.
    pub fn db_path(&self) -> PathBuf {
        self.dir().join("db.sqlite3")
    }

    /// A path for a unix socket named `name` in the scratch directory (short enough for
    /// `sun_path`).
    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.sock"))
    }

    /// Runs `manage.py ARGS…` with the site's environment and `extra_env`; returns its stdout.
    fn manage_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<String> {
        let project = project_dir();
        let output = Command::new(self.venv.join("bin/python"))
            .arg(project.join("manage.py"))
            .args(args)
            .current_dir(&project)
            .envs(self.environment(""))
            .envs(extra_env.iter().copied())
            .output()
            .context("running manage.py with the virtualenv's python")?;
        if !output.status.success() {
            bail!(
                "manage.py {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The environment `settings.py` and `wsgi.py` read.
    fn environment(&self, backend: &str) -> Vec<(String, String)> {
        vec![
            ("DJANGO_SETTINGS_MODULE".into(), "webapp.settings".into()),
            // The project lives in the work tree: no __pycache__ there.
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("PUBLIC_HOST".into(), self.settings.public_host.clone()),
            ("PUBLIC_ORIGIN".into(), self.settings.public_origin.clone()),
            ("DJANGO_DB".into(), self.db_path().display().to_string()),
            ("DJANGO_SECRET".into(), self.secret.clone()),
            ("BACKEND_NAME".into(), backend.into()),
            (
                "TRUSTED_PROXIES".into(),
                self.settings.trusted_proxies.join(","),
            ),
        ]
    }

    /// Starts a gunicorn backend named `name` in `netns` on `listen` (each `IP:PORT` or
    /// `unix:PATH`) and waits until every socket answers `/healthz/` as this backend.
    /// One worker process with 4 threads (keep-alive works with the threaded worker); access
    /// log and stderr in the site's directory.
    pub fn start_backend(
        &self,
        netns: &Netns,
        name: &str,
        listen: &[&str],
    ) -> anyhow::Result<Gunicorn> {
        self.start_backend_with(netns, name, listen, Workers::Threaded)
    }

    /// [`DjangoSite::start_backend`] with the worker model `workers`.
    pub fn start_backend_with(
        &self,
        netns: &Netns,
        name: &str,
        listen: &[&str],
        workers: Workers,
    ) -> anyhow::Result<Gunicorn> {
        ensure!(!listen.is_empty(), "backend {name}: nothing to listen on");
        let access_log = self.dir().join(format!("gunicorn-{name}.access.log"));
        let stderr = self.dir().join(format!("gunicorn-{name}.stderr"));
        let gunicorn = self.venv.join("bin/gunicorn");
        let project = project_dir();
        let mut args: Vec<String> = self
            .environment(name)
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        args.push(gunicorn.display().to_string());
        for address in listen {
            args.push("--bind".into());
            args.push(match address.strip_prefix("unix:") {
                Some(path) => format!("unix:{path}"),
                None => (*address).to_string(),
            });
        }
        let forwarded_allow: Vec<&str> = self
            .settings
            .trusted_proxies
            .iter()
            .map(String::as_str)
            // gunicorn 23 takes addresses only; it needs just its peer, the balancer.
            .filter(|p| *p != "unix" && !p.contains('/'))
            .collect();
        let (class, count, threads) = match workers {
            Workers::Threaded => ("gthread", 1, 4),
            Workers::Sync(count) => ("sync", count, 1),
        };
        args.extend(
            [
                "--chdir",
                &project.display().to_string(),
                "--worker-class",
                class,
                "--workers",
                &count.to_string(),
                "--threads",
                &threads.to_string(),
                "--graceful-timeout",
                "3",
                "--access-logfile",
                &access_log.display().to_string(),
                // gunicorn's own trust of the proxy, for X-Forwarded-Proto → wsgi.url_scheme
                // (Django reads the header itself, see settings.py).
                "--forwarded-allow-ips",
                &forwarded_allow.join(","),
                // gunicorn ≥ 22 drops header names with '_' by itself; as older versions and
                // other WSGI servers do, map them to HTTP_* (X_Forwarded_For and
                // X-Forwarded-For become the same key), so a test sees whether the balancer
                // lets them through.
                "--header-map",
                "dangerous",
                "webapp.wsgi:application",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // env(1) execs gunicorn with the site's environment: the pid stays gunicorn's master.
        let process = NetnsProcess::spawn(netns, "/usr/bin/env", &args, Some(&stderr))
            .with_context(|| format!("starting gunicorn backend {name}"))?;
        let mut backend = Gunicorn {
            process,
            name: name.to_string(),
            addresses: listen.iter().map(|a| a.to_string()).collect(),
            access_log,
            stderr,
            public_host: self.settings.public_host.clone(),
        };
        backend
            .wait_ready(netns, BACKEND_READY_TIMEOUT)
            .with_context(|| {
                format!("gunicorn backend {name} on {listen:?} in {}", netns.name())
            })?;
        Ok(backend)
    }
}

/// How a gunicorn backend serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One worker process with 4 threads (keep-alive works with it).
    Threaded,
    /// `n` sync worker processes: one request at a time each, no keep-alive. The deployment
    /// gunicorn's docs describe, and the one a slow client can starve.
    Sync(u32),
}

/// One gunicorn master (and its worker) serving a [`DjangoSite`]; SIGTERM on drop (the
/// namespace's own cleanup kills a worker left behind).
pub struct Gunicorn {
    process: NetnsProcess,
    name: String,
    addresses: Vec<String>,
    access_log: PathBuf,
    stderr: PathBuf,
    public_host: String,
}

impl Gunicorn {
    /// The first socket as a pool server `url`: `http://IP:PORT` or `unix:PATH`.
    pub fn url(&self) -> String {
        let address = &self.addresses[0];
        if address.starts_with("unix:") {
            address.clone()
        } else {
            format!("http://{address}")
        }
    }

    /// gunicorn's access log (one line per request, with the request line as received).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }

    /// gunicorn's and Django's stderr (startup, errors, refused hosts, CSRF failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM and wait. Returns the exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.process.stop()
    }

    /// A client straight to socket `index` in `netns` (not through the balancer).
    pub fn direct_client(&self, netns: &Netns, index: usize) -> Client {
        let address = &self.addresses[index];
        match address.strip_prefix("unix:") {
            Some(path) => Client::unix(netns, path),
            None => Client::tcp(netns, address),
        }
    }

    /// Polls `/healthz/` on every socket until each answers 200 as this backend.
    fn wait_ready(&mut self, netns: &Netns, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        for index in 0..self.addresses.len() {
            let client = self
                .direct_client(netns, index)
                .timeout(Duration::from_secs(5));
            let request = Request::get("/healthz/").host(&self.public_host);
            loop {
                let outcome = client.send(&request);
                match &outcome {
                    Ok(reply)
                        if reply.status == 200
                            && reply.header("x-backend") == Some(self.name.as_str()) =>
                    {
                        break;
                    }
                    _ => {}
                }
                if !self.process.is_running() {
                    bail!("gunicorn exited; its stderr:\n{}", self.log());
                }
                if Instant::now() > deadline {
                    let seen = match outcome {
                        Ok(reply) => format!("status {} {:?}", reply.status, reply.text()),
                        Err(err) => format!("{err:#}"),
                    };
                    bail!(
                        "{} did not answer /healthz/ within {limit:?} (last: {seen}); stderr:\n{}",
                        self.addresses[index],
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

/// The CSRF token of a Django form (the admin login form's `csrfmiddlewaretoken`).
pub fn csrf_token(form: &str) -> anyhow::Result<String> {
    let marker = "name=\"csrfmiddlewaretoken\" value=\"";
    let start = form
        .find(marker)
        .context("no csrfmiddlewaretoken in the form")?
        + marker.len();
    let end = form[start..]
        .find('"')
        .context("no end to the csrfmiddlewaretoken value")?
        + start;
    Ok(form[start..end].to_string())
}

/// The body of the admin login POST: the CSRF token, [`ADMIN_USER`], [`ADMIN_PASSWORD`] and
/// `next` (a path; it only holds '/' and URL-safe characters in the tests).
pub fn admin_login_body(token: &str, next: &str) -> String {
    format!(
        "csrfmiddlewaretoken={token}&username={ADMIN_USER}&password={ADMIN_PASSWORD}&next={next}"
    )
}

/// The value of cookie `name` in a curl cookie jar (`-c FILE`, Netscape format: tab-separated
/// domain, subdomains, path, secure, expiry, name, value; `#HttpOnly_` prefixes the domain of
/// HttpOnly cookies), if the jar holds it.
pub fn jar_cookie(jar: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(jar).ok()?;
    // The last line of the name wins, as curl rewrites the jar in order.
    text.lines()
        .rev()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.starts_with('#') || line.starts_with("#HttpOnly_"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields.len() == 7 && fields[5] == name).then(|| fields[6].to_string())
        })
        .next()
}
