//! Provider presets: what `provider = "microsoft"` (and friends) means in hosts, ports,
//! endpoints, scopes and client ids, with every value overridable from the account.
//! Pure: no I/O; secrets stay as commands until a grant needs them.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::config::{
    Account, CommandSpec, Flow, ProviderKind, SaslChoice, Secret, TlsMode, TransportKind,
};
use crate::error::{Error, Result};

/// Thunderbird's public client (no secret; organisations and personal accounts): the
/// de-facto shared client for IMAP/SMTP, the `clientId` of Microsoft's entry in
/// Thunderbird's `mailnews/base/src/OAuth2Providers.sys.mjs`
/// (<https://hg.mozilla.org/comm-central/file/tip/mailnews/base/src/OAuth2Providers.sys.mjs>).
pub const THUNDERBIRD_CLIENT_ID: &str = "9e5f94bc-e8a4-4e73-b8be-63364c29d753";

/// The default `redirect_uri`: the loopback IP literal, the listener's port added at run
/// time (RFC 8252 §7.3, <https://www.rfc-editor.org/rfc/rfc8252#section-7.3>). Current
/// Thunderbird sends exactly `http://127.0.0.1:PORT/` (`mailnews/base/src/OAuth2.sys.mjs`,
/// <https://hg.mozilla.org/comm-central/file/tip/mailnews/base/src/OAuth2.sys.mjs>), and
/// Microsoft recommends `127.0.0.1` over `localhost`
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/reply-url>).
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1";

/// The redirect URIs that Thunderbird's app registration holds (scheme and host; Microsoft
/// ignores the port of a loopback redirect). `http://localhost:PORT` is refused with
/// AADSTS50011 for this client id: <https://github.com/UvA-FNWI/M365-IMAP/issues/18>,
/// <https://github.com/simonrob/email-oauth2-proxy/issues/267>; `https://localhost` works:
/// <https://github.com/simonrob/email-oauth2-proxy/issues/281>.
pub const THUNDERBIRD_REDIRECTS: &[&str] = &["http://127.0.0.1", "https://localhost"];

/// What to do after AADSTS50011 (the redirect URI is not in the app's registration).
pub const REDIRECT_HINT: &str = "Microsoft refuses a redirect_uri that the app's registration does not \
     hold with AADSTS50011 (shown only in the browser); with Thunderbird's client id use \
     redirect_uri = \"http://127.0.0.1\" (the default) or \"https://localhost\" (then paste the \
     address the browser ends at)";

/// Before the browser opens: with Thunderbird's client id, a `redirect_uri` that its
/// registration does not hold would only fail in the browser (AADSTS50011), where the
/// program cannot see it; refuse it here with what works.
pub fn check_redirect_registered(account: &str, oauth: &OAuthSettings) -> Result<()> {
    if oauth.client_id.as_deref() != Some(THUNDERBIRD_CLIENT_ID) {
        return Ok(());
    }
    if is_registered(&oauth.redirect_uri, THUNDERBIRD_REDIRECTS) {
        return Ok(());
    }
    Err(Error::config(format!(
        "account {account}: redirect_uri `{}` is not registered for Thunderbird's client id \
         {THUNDERBIRD_CLIENT_ID}: {REDIRECT_HINT}",
        oauth.redirect_uri
    )))
}

/// Whether `uri` matches one of `registered` in scheme, host and path (not the port).
#[must_use]
pub fn is_registered(uri: &str, registered: &[&str]) -> bool {
    let Ok(url) = reqwest::Url::parse(uri) else {
        return false;
    };
    registered.iter().any(|r| {
        reqwest::Url::parse(r).is_ok_and(|r| {
            r.scheme() == url.scheme() && r.host_str() == url.host_str() && r.path() == url.path()
        })
    })
}

/// Renew a cached access token that has less than this long left (seconds). Microsoft's
/// High Volume Email endpoint refuses a token with less than about 10 minutes left
/// (`501 5.5.127 Invalid XOAUTH2 auth data - Token will expire soon`: the warning in
/// <https://github.com/tarickb/sasl-xoauth2#readme>, "`refresh_window` … at least 600
/// seconds"); Microsoft issues tokens for 60–90 minutes, so 10 minutes costs little, and a
/// slow SMTP set-up or a skewed clock never meets a dying token.
pub const REFRESH_MARGIN: u64 = 600;

/// Mail domains whose provider is known without asking DNS: Microsoft's consumer domains
/// (Outlook.com, Hotmail, Live, MSN) and Google's. An account at one of them that names no
/// `provider` gets this one; `login EMAIL` needs no MX lookup for them.
const WELL_KNOWN_DOMAINS: &[(&str, ProviderKind)] = &[
    ("gmail.com", ProviderKind::Gmail),
    ("googlemail.com", ProviderKind::Gmail),
    ("outlook.com", ProviderKind::Microsoft),
    ("hotmail.com", ProviderKind::Microsoft),
    ("live.com", ProviderKind::Microsoft),
    ("msn.com", ProviderKind::Microsoft),
    ("passport.com", ProviderKind::Microsoft),
    ("windowslive.com", ProviderKind::Microsoft),
];

/// First labels of Microsoft's consumer domains under country suffixes (`hotmail.co.uk`,
/// `outlook.fr`, `live.de`, …).
const MICROSOFT_CONSUMER_LABELS: &[&str] = &["hotmail", "outlook", "live"];

/// The country suffixes Microsoft's consumer domains use.
const COUNTRY_SUFFIXES: &[&str] = &[
    "at", "be", "bg", "ca", "ch", "cl", "co.id", "co.il", "co.in", "co.jp", "co.kr", "co.nz",
    "co.th", "co.uk", "co.za", "com.ar", "com.au", "com.br", "com.gr", "com.mx", "com.my",
    "com.ph", "com.pt", "com.sg", "com.tr", "com.tw", "com.vn", "cz", "de", "dk", "ee", "es", "fi",
    "fr", "gr", "hu", "ie", "in", "it", "jp", "kr", "lt", "lv", "my", "nl", "no", "ph", "pt", "ro",
    "rs", "ru", "sa", "se", "sg", "sk",
];

/// How long the provider keeps a refresh token that nobody uses (seconds), where it says:
/// Microsoft's expire after 90 days without use
/// (<https://learn.microsoft.com/entra/identity-platform/refresh-tokens>), Google's after
/// six months without use, taken as 180 days
/// (<https://developers.google.com/identity/protocols/oauth2#expiration>); a custom
/// server's is unknown.
#[must_use]
pub fn refresh_idle_lifetime(provider: ProviderKind) -> Option<u64> {
    match provider {
        ProviderKind::Microsoft | ProviderKind::MicrosoftChina => Some(90 * 86_400),
        ProviderKind::Gmail => Some(180 * 86_400),
        ProviderKind::Custom => None,
    }
}

/// The provider in effect for an account: as written, else the one of a well-known
/// `email` domain (gmail.com → gmail, hotmail.com → microsoft, …), else microsoft.
#[must_use]
pub fn kind_of(account: &Account) -> ProviderKind {
    account
        .provider
        .or_else(|| for_email(&account.email))
        .unwrap_or_default()
}

/// The provider of a well-known mail domain (`alice@hotmail.co.uk` → `microsoft`,
/// `bob@gmail.com` → `gmail`); `None` for any other domain.
#[must_use]
pub fn for_email(email: &str) -> Option<ProviderKind> {
    let domain = email.rsplit_once('@')?.1.trim().trim_end_matches('.');
    let domain = domain.to_ascii_lowercase();
    if let Some((_, kind)) = WELL_KNOWN_DOMAINS.iter().find(|(d, _)| *d == domain) {
        return Some(*kind);
    }
    let (first, suffix) = domain.split_once('.')?;
    (MICROSOFT_CONSUMER_LABELS.contains(&first) && COUNTRY_SUFFIXES.contains(&suffix))
        .then_some(ProviderKind::Microsoft)
}

/// Where to submit mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Extra trusted root certificates (PEM), added to the system's.
    pub ca_file: Option<PathBuf>,
    /// How AUTH carries the token: on the AUTH line, or in two steps when long.
    pub auth_line: AuthLine,
    /// Which SASL mechanism carries it.
    pub sasl: Sasl,
    /// The account's `proxy`, through which the connection goes.
    pub proxy: Option<crate::proxy::Proxy>,
}

/// The SASL mechanism an account authenticates with (`sasl`, resolved per provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sasl {
    Xoauth2,
    /// RFC 7628 OAUTHBEARER; a server that does not offer it is an error.
    Oauthbearer,
    /// OAUTHBEARER when the server offers it, else XOAUTH2 (`auto` for gmail and custom:
    /// Google offers both, and Dovecot's documentation prefers OAUTHBEARER).
    OauthbearerWhenOffered,
}

/// The form of `AUTH XOAUTH2`. Whatever the form, an inline AUTH answered with 500, 501
/// or 555 is retried at once in two steps on the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLine {
    /// `AUTH XOAUTH2 <base64>` on one line whatever its length: what Microsoft documents
    /// (<https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth>,
    /// "SMTP Protocol Exchange") and what Thunderbird sends; one round trip fewer, and
    /// Exchange tokens make XOAUTH2 strings of over 2,500 bytes.
    Inline,
    /// RFC 4954 §4 (<https://www.rfc-editor.org/rfc/rfc4954#section-4>): the initial
    /// response goes on the AUTH line only when the line stays within 512 octets, else
    /// after a `334`. Gmail refuses long command lines (`555 5.5.2 Syntax error, command
    /// line too long`: <https://github.com/eclipse-ee4j/angus-mail/issues/201>) and
    /// Dovecot's submission server answers `500 5.5.2 Line too long`.
    Rfc4954,
}

impl Server {
    /// `host:port`, as errors show it.
    #[must_use]
    pub fn address(&self) -> String {
        // An IPv6 address in brackets, as in a URL: `[::1]:587`, not `::1:587`.
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Everything a grant needs to talk to the identity platform.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub flow: Flow,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_secret_cmd: Option<CommandSpec>,
    pub password_cmd: Option<CommandSpec>,
    pub authorize_url: String,
    pub token_url: String,
    pub device_code_url: String,
    /// Sent as `scope` (v2); empty when `resource` is used.
    pub scopes: Vec<String>,
    /// Sent as `resource` (v1 endpoints, e.g. 21Vianet's password grant).
    pub resource: Option<String>,
    /// More scopes to consent to in the browser sign-in only (MSAL's
    /// `extraScopesToConsent`): Graph's `Mail.Send` for an account that may send through
    /// Graph, so the one refresh token later redeems for a Graph token too. Never in a
    /// token request: one token is for one resource.
    pub consent_scopes: Vec<String>,
    pub redirect_uri: String,
    /// Extra parameters of the authorize request (see [`authorize_params`]).
    pub authorize_params: Vec<(&'static str, &'static str)>,
    /// The extra trusted roots also apply to the token endpoint (tests, private clouds).
    pub ca_file: Option<PathBuf>,
    /// The account's `proxy` carries the token requests too.
    pub proxy: Option<crate::proxy::Proxy>,
}

/// One account with its provider's defaults filled in.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub name: String,
    pub provider: ProviderKind,
    /// The mailbox: the default envelope sender, and the XOAUTH2 user unless `user` is set.
    pub email: String,
    pub smtp: Server,
    pub oauth: OAuthSettings,
    /// The account as configured (`rewrite_from`, `queue`, `from` patterns, commands).
    pub config: Account,
    /// Microsoft Graph, where the provider has it (or `graph_url` is set).
    pub graph: Option<GraphSettings>,
    /// `[aliases]` expanded (lower-case local name or `*` → addresses), set by the callers
    /// that hold the whole configuration: Graph's copy writes a bare local name of the
    /// header (cron's `To: root`) as these, since Graph refuses `root`.
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
}

/// Where and with which scopes Microsoft Graph `sendMail` is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSettings {
    /// The base URL without a trailing slash, e.g. `https://graph.microsoft.com`.
    pub url: String,
    /// Scopes of the Graph token: `graph_scopes`, else `{url}/Mail.Send {url}/Mail.ReadWrite
    /// offline_access`
    /// (delegated) or `{url}/.default` (client credentials).
    pub scopes: Vec<String>,
    /// App-only: send as `/v1.0/users/{email}` instead of `/v1.0/me`.
    pub app_only: bool,
}

impl GraphSettings {
    /// `POST` here to send: `…/v1.0/me/sendMail`, or `…/v1.0/users/{email}/sendMail`.
    #[must_use]
    pub fn send_url(&self, email: &str) -> String {
        if self.app_only {
            let user: String = url_path_segment(email);
            format!("{}/v1.0/users/{user}/sendMail", self.url)
        } else {
            format!("{}/v1.0/me/sendMail", self.url)
        }
    }
}

/// `https://host` of the first scope that is a URL (`https://host/Mail.Send`).
fn scope_origin(scopes: &[String]) -> Option<String> {
    scopes.iter().find_map(|s| {
        let rest = s.strip_prefix("https://")?;
        let host = rest.split('/').next().filter(|h| !h.is_empty())?;
        Some(format!("https://{host}"))
    })
}

/// `email` as one URL path segment (percent-encoding what a path segment cannot hold).
fn url_path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"@.-_~+".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl AccountSettings {
    /// The account with its OAuth scopes replaced by Graph's: what a token request for the
    /// Graph audience sends (same client, tenant, endpoints and refresh token).
    #[must_use]
    pub fn for_graph(&self) -> Option<AccountSettings> {
        let graph = self.graph.as_ref()?;
        let mut a = self.clone();
        a.oauth.scopes.clone_from(&graph.scopes);
        a.oauth.consent_scopes.clear();
        // v1 endpoints name the audience as `resource`; v2 names it in the scopes. The
        // resource follows `graph_scopes` when they are set (their origin), as the scopes
        // do on v2; else `graph_url`.
        if a.oauth.resource.is_some() {
            let from_scopes = self
                .config
                .graph_scopes
                .as_ref()
                .and_then(|s| scope_origin(s));
            a.oauth.resource = Some(from_scopes.unwrap_or_else(|| graph.url.clone()));
            a.oauth.scopes.clear();
        }
        Some(a)
    }
}

impl AccountSettings {
    /// The scope a refresh asks for when the cache records none as granted (a cache written
    /// by hand or by an older version). Microsoft's refresh tokens are multi-resource: a
    /// refresh that names no scope gets a token for whichever resource the token service
    /// picks, so it names the configured scopes, which the login asked for
    /// (<https://learn.microsoft.com/en-us/entra/identity-platform/refresh-tokens>). Others:
    /// none, which means "as granted" (RFC 6749 §6).
    #[must_use]
    pub fn refresh_scope_when_unknown(&self) -> Option<String> {
        let microsoft = matches!(
            self.provider,
            ProviderKind::Microsoft | ProviderKind::MicrosoftChina
        );
        (microsoft && !self.oauth.scopes.is_empty()).then(|| self.oauth.scopes.join(" "))
    }

    /// The identity that signs in and authenticates: `user` when set, else `email`.
    #[must_use]
    pub fn xoauth2_user(&self) -> &str {
        self.config.user.as_deref().unwrap_or(&self.email)
    }
}

impl OAuthSettings {
    /// The client id, or a config error that says how to get one.
    pub fn client_id(&self, account: &str, provider: ProviderKind) -> Result<&str> {
        self.client_id.as_deref().ok_or_else(|| {
            Error::config(match provider {
                ProviderKind::MicrosoftChina => format!(
                    "account {account}: `client_id` is required for microsoft-china: register an app at \
                     https://portal.azure.cn (Microsoft Entra ID → App registrations), add the delegated \
                     permission SMTP.Send, allow public client flows, and put its Application (client) ID \
                     in the config"
                ),
                ProviderKind::Gmail => format!(
                    "account {account}: `client_id` (and `client_secret` or `client_secret_cmd`) are required \
                     for gmail: create an OAuth client of type Desktop app in the Google Cloud console \
                     (https://console.cloud.google.com/apis/credentials)"
                ),
                _ => format!("account {account}: `client_id` is required"),
            })
        })
    }

    /// The client secret from the config or its command, if any.
    pub fn client_secret(&self) -> Result<Option<String>> {
        if let Some(s) = &self.client_secret {
            return Ok(Some(s.expose().to_owned()));
        }
        self.client_secret_cmd
            .as_ref()
            .map(|c| c.secret("client_secret_cmd"))
            .transpose()
    }
}

/// `sasl` resolved: `auto` is XOAUTH2 for Microsoft, which offers nothing else, and
/// OAUTHBEARER where a gmail or custom server offers it.
fn sasl(account: &Account) -> Sasl {
    match (account.sasl, kind_of(account)) {
        (SaslChoice::Xoauth2, _)
        | (SaslChoice::Auto, ProviderKind::Microsoft | ProviderKind::MicrosoftChina) => {
            Sasl::Xoauth2
        }
        (SaslChoice::Oauthbearer, _) => Sasl::Oauthbearer,
        (SaslChoice::Auto, ProviderKind::Gmail | ProviderKind::Custom) => {
            Sasl::OauthbearerWhenOffered
        }
    }
}

/// `proxy` parsed (a value that is not one is a configuration error).
fn proxy(name: &str, account: &Account) -> Result<Option<crate::proxy::Proxy>> {
    account
        .proxy
        .as_deref()
        .map(crate::proxy::Proxy::parse)
        .transpose()
        .map_err(|e| Error::config(format!("account {name}: {e}")))
}

/// The SMTP server of account `name`: the account's settings, else the preset's.
fn smtp_server(name: &str, account: &Account, preset: &Preset) -> Result<Server> {
    let tls = account.tls.unwrap_or(TlsMode::Starttls);
    Ok(Server {
        host: account
            .smtp_host
            .clone()
            .or(preset.smtp_host.map(str::to_owned))
            .ok_or_else(|| {
                Error::config(format!(
                    "account {name}: `smtp_host` is required for provider = \"custom\""
                ))
            })?,
        port: account.smtp_port.unwrap_or(match tls {
            TlsMode::Starttls => 587,
            TlsMode::Implicit => 465,
        }),
        tls,
        ca_file: account.tls_ca_file.clone(),
        auth_line: preset.auth_line,
        sasl: sasl(account),
        proxy: proxy(name, account)?,
    })
}

/// Fills in the provider's defaults for account `name`.
pub fn resolve(name: &str, account: &Account) -> Result<AccountSettings> {
    let preset = Preset::of(account);
    let flow = account.flow.unwrap_or(Flow::Authcode);
    let missing = |key: &str| {
        Error::config(format!(
            "account {name}: `{key}` is required for provider = \"custom\""
        ))
    };
    let smtp = smtp_server(name, account, &preset)?;
    let endpoint = |configured: &Option<String>, path: &str| -> Option<String> {
        configured
            .clone()
            .or_else(|| preset.authority.map(|a| format!("{a}{path}")))
    };
    let (authorize, token, device) = if account.resource.is_some() {
        ("/oauth2/authorize", "/oauth2/token", "/oauth2/devicecode")
    } else {
        (preset.authorize_path, preset.token_path, preset.device_path)
    };
    let scopes = match (&account.scopes, &account.resource) {
        (Some(s), _) => s.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) if flow == Flow::ClientCredentials => {
            preset.app_scopes.iter().map(|s| (*s).to_owned()).collect()
        }
        (None, None) => {
            let mut scopes: Vec<String> = preset.scopes.iter().map(|s| (*s).to_owned()).collect();
            if matches!(flow, Flow::Authcode | Flow::Devicecode) {
                scopes.extend(preset.identity_scopes.iter().map(|s| (*s).to_owned()));
            }
            scopes
        }
    };
    let oauth = OAuthSettings {
        flow,
        client_id: account
            .client_id
            .clone()
            .or(preset.client_id.map(str::to_owned)),
        client_secret: account.client_secret.clone(),
        client_secret_cmd: account.client_secret_cmd.clone(),
        password_cmd: account.password_cmd.clone(),
        authorize_url: endpoint(&account.authorize_url, authorize).unwrap_or_default(),
        token_url: endpoint(&account.token_url, token).ok_or_else(|| missing("token_url"))?,
        device_code_url: endpoint(&account.device_code_url, device).unwrap_or_default(),
        scopes: scopes.clone(),
        resource: account.resource.clone(),
        consent_scopes: Vec::new(),
        redirect_uri: account
            .redirect_uri
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIRECT_URI.to_owned()),
        authorize_params: authorize_params(kind_of(account), &scopes),
        ca_file: account.tls_ca_file.clone(),
        proxy: smtp.proxy.clone(),
    };
    let tenant = account.tenant.as_deref().unwrap_or(preset.tenant);
    let oauth = OAuthSettings {
        authorize_url: oauth.authorize_url.replace("{tenant}", tenant),
        token_url: oauth.token_url.replace("{tenant}", tenant),
        device_code_url: oauth.device_code_url.replace("{tenant}", tenant),
        ..oauth
    };
    let graph = graph_settings(name, account, &preset, flow)?;
    let mut oauth = oauth;
    if account.transport != TransportKind::Smtp
        && let Some(g) = &graph
        && !g.app_only
    {
        oauth.consent_scopes = g
            .scopes
            .iter()
            .filter(|s| !oauth.scopes.contains(s))
            .cloned()
            .collect();
    }
    Ok(AccountSettings {
        aliases: std::collections::BTreeMap::new(),
        name: name.to_owned(),
        provider: kind_of(account),
        email: account.email.clone(),
        smtp,
        oauth,
        config: account.clone(),
        graph,
    })
}

/// `OpenID` Connect scopes for Microsoft's interactive flows: the `id_token` carries
/// `preferred_username` only with `profile` and `email` only with `email`
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference>,
/// <https://learn.microsoft.com/en-us/entra/identity-platform/scopes-oidc#openid-connect-scopes>).
const MICROSOFT_IDENTITY_SCOPES: &[&str] = &["openid", "profile", "email"];

/// What the authorize request needs beyond the standard parameters for a refresh token
/// to come back:
/// - Google: `access_type=offline`, and `prompt=consent` so that a second login gets a
///   refresh token again (Google issues one only on consent):
///   <https://developers.google.com/identity/protocols/oauth2/web-server#offline>,
///   <https://developers.google.com/identity/protocols/oauth2/web-server#request-parameter-prompt>;
/// - a standard `OpenID` provider (`custom`) asked for `offline_access`: `prompt=consent`,
///   else it must ignore `offline_access` (`OpenID` Connect Core §11,
///   <https://openid.net/specs/openid-connect-core-1_0.html#OfflineAccess>);
/// - Microsoft: no `prompt` (its `offline_access` needs none, and `prompt=consent` would
///   ask users of Thunderbird's client id for consent on every login:
///   <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow#request-an-authorization-code>).
fn authorize_params(kind: ProviderKind, scopes: &[String]) -> Vec<(&'static str, &'static str)> {
    match kind {
        ProviderKind::Gmail => vec![("access_type", "offline"), ("prompt", "consent")],
        ProviderKind::Custom if scopes.iter().any(|s| s == "offline_access") => {
            vec![("prompt", "consent")]
        }
        _ => Vec::new(),
    }
}

/// Graph's URL and scopes; a config error when `transport` needs Graph and there is none.
fn graph_settings(
    name: &str,
    account: &Account,
    preset: &Preset,
    flow: Flow,
) -> Result<Option<GraphSettings>> {
    let url = account
        .graph_url
        .clone()
        .or(preset.graph_url.map(str::to_owned));
    let Some(url) = url else {
        if account.transport != TransportKind::Smtp {
            return Err(Error::config(format!(
                "account {name}: transport = \"graph\" or \"auto\" needs Microsoft Graph: set \
                 `graph_url` (this provider has none)"
            )));
        }
        return Ok(None);
    };
    if account.transport != TransportKind::Smtp && !is_https(&url) {
        return Err(Error::config(format!(
            "account {name}: graph_url `{url}` is not https://: tokens are only sent over TLS"
        )));
    }
    let url = url.trim_end_matches('/').to_owned();
    let app_only = flow == Flow::ClientCredentials;
    let scopes = match &account.graph_scopes {
        Some(s) => s.clone(),
        None if app_only => vec![format!("{url}/.default")],
        // Mail.ReadWrite: a message above Graph's 4 MB request limit goes as a draft.
        None => vec![
            format!("{url}/Mail.Send"),
            format!("{url}/Mail.ReadWrite"),
            "offline_access".to_owned(),
        ],
    };
    Ok(Some(GraphSettings {
        url,
        scopes,
        app_only,
    }))
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The tenant an account's endpoints use (its `tenant`, else the provider's default), for
/// providers whose endpoints have one; `None` for the others or for endpoints all set.
#[must_use]
pub fn tenant(account: &Account) -> Option<String> {
    let preset = Preset::of(account);
    preset.authority.filter(|a| a.contains("{tenant}"))?;
    Some(
        account
            .tenant
            .clone()
            .unwrap_or_else(|| preset.tenant.to_owned()),
    )
}

/// A provider's built-in values. `authority` may hold `{tenant}`.
struct Preset {
    smtp_host: Option<&'static str>,
    authority: Option<&'static str>,
    authorize_path: &'static str,
    token_path: &'static str,
    device_path: &'static str,
    scopes: &'static [&'static str],
    app_scopes: &'static [&'static str],
    client_id: Option<&'static str>,
    /// Added for the interactive flows, so that the `id_token` names who signed in.
    identity_scopes: &'static [&'static str],
    auth_line: AuthLine,
    /// `{tenant}` when the account names none.
    tenant: &'static str,
    /// Microsoft Graph's base URL in this cloud.
    graph_url: Option<&'static str>,
}

impl Preset {
    fn of(account: &Account) -> Preset {
        const V2: (&str, &str, &str) = (
            "/oauth2/v2.0/authorize",
            "/oauth2/v2.0/token",
            "/oauth2/v2.0/devicecode",
        );
        match kind_of(account) {
            // One token serves SMTP, IMAP and POP (mbsync's PassCmd); offline_access
            // is what makes Microsoft return a refresh token at all.
            ProviderKind::Microsoft => Preset {
                smtp_host: Some("smtp.office365.com"),
                authority: Some("https://login.microsoftonline.com/{tenant}"),
                authorize_path: V2.0,
                token_path: V2.1,
                device_path: V2.2,
                scopes: &[
                    "https://outlook.office.com/SMTP.Send",
                    "https://outlook.office.com/IMAP.AccessAsUser.All",
                    "https://outlook.office.com/POP.AccessAsUser.All",
                    "offline_access",
                ],
                app_scopes: &["https://outlook.office365.com/.default"],
                client_id: Some(THUNDERBIRD_CLIENT_ID),
                identity_scopes: MICROSOFT_IDENTITY_SCOPES,
                auth_line: AuthLine::Inline,
                // Work and personal accounts, as Thunderbird's multi-tenant client takes.
                tenant: "common",
                // Graph's global service root (learn.microsoft.com/graph/deployments).
                graph_url: Some("https://graph.microsoft.com"),
            },
            // 21Vianet: a separate cloud with its own app registrations.
            ProviderKind::MicrosoftChina => Preset {
                smtp_host: Some("smtp.partner.outlook.cn"),
                authority: Some("https://login.partner.microsoftonline.cn/{tenant}"),
                authorize_path: V2.0,
                token_path: V2.1,
                device_path: V2.2,
                scopes: &[
                    "https://partner.outlook.cn/SMTP.Send",
                    "https://partner.outlook.cn/IMAP.AccessAsUser.All",
                    "https://partner.outlook.cn/POP.AccessAsUser.All",
                    "offline_access",
                ],
                app_scopes: &["https://partner.outlook.cn/.default"],
                client_id: None,
                identity_scopes: MICROSOFT_IDENTITY_SCOPES,
                // 21Vianet's guide sends it inline to smtp.partner.outlook.cn (MailKit's
                // SaslMechanismOAuth2, which uses SASL-IR whatever the length):
                // <https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth>.
                auth_line: AuthLine::Inline,
                // 21Vianet has no personal accounts, and an app registered with the
                // default "single tenant" gets AADSTS50194 on `/common`
                // (<https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes>);
                // `organizations` takes any work account
                // (<https://learn.microsoft.com/en-us/entra/identity-platform/msal-client-application-configuration#authority>).
                tenant: "organizations",
                // Graph operated by 21Vianet (learn.microsoft.com/graph/deployments).
                graph_url: Some("https://microsoftgraph.chinacloudapi.cn"),
            },
            ProviderKind::Gmail => Preset {
                smtp_host: Some("smtp.gmail.com"),
                authority: None,
                authorize_path: "",
                token_path: "",
                device_path: "",
                scopes: &["https://mail.google.com/"],
                app_scopes: &["https://mail.google.com/"],
                client_id: None,
                identity_scopes: &[],
                auth_line: AuthLine::Rfc4954,
                tenant: "common",
                graph_url: None,
            },
            ProviderKind::Custom => Preset {
                smtp_host: None,
                authority: None,
                authorize_path: "",
                token_path: "",
                device_path: "",
                scopes: &[],
                app_scopes: &[],
                client_id: None,
                identity_scopes: &[],
                auth_line: AuthLine::Rfc4954,
                tenant: "common",
                graph_url: None,
            },
        }
        .with_gmail_endpoints(kind_of(account))
    }

    fn with_gmail_endpoints(self, kind: ProviderKind) -> Preset {
        if kind != ProviderKind::Gmail {
            return self;
        }
        // Google's endpoints are not below one authority; spell them out whole.
        Preset {
            authority: Some(""),
            authorize_path: "https://accounts.google.com/o/oauth2/v2/auth",
            token_path: "https://oauth2.googleapis.com/token",
            device_path: "https://oauth2.googleapis.com/device/code",
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_known_email_domain_without_provider_gets_its_provider() {
        let c = crate::config::parse(
            "[accounts.g]\nemail = \"bob@gmail.com\"\n\
                   [accounts.h]\nemail = \"japinli@hotmail.com\"\n\
                   [accounts.c]\nemail = \"alice@contoso.com\"\n\
                   [accounts.x]\nprovider = \"custom\"\nemail = \"carol@gmail.com\"\n",
            std::path::Path::new("/c.toml"),
        )
        .unwrap();
        assert_eq!(kind_of(&c.accounts["g"]), ProviderKind::Gmail);
        assert_eq!(kind_of(&c.accounts["h"]), ProviderKind::Microsoft);
        assert_eq!(kind_of(&c.accounts["c"]), ProviderKind::Microsoft);
        assert_eq!(kind_of(&c.accounts["x"]), ProviderKind::Custom);
    }

    fn account(provider: ProviderKind) -> Account {
        Account {
            provider: Some(provider),
            email: "a@contoso.com".into(),
            ..Account::default()
        }
    }

    #[test]
    fn microsoft_defaults() {
        let s = resolve("w", &account(ProviderKind::Microsoft)).unwrap();
        assert_eq!(s.smtp.address(), "smtp.office365.com:587");
        assert_eq!(
            s.oauth.token_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert_eq!(s.oauth.client_id.as_deref(), Some(THUNDERBIRD_CLIENT_ID));
        assert!(s.oauth.scopes.contains(&"offline_access".to_owned()));
    }

    #[test]
    fn china_v1_with_resource_and_tenant() {
        let mut a = account(ProviderKind::MicrosoftChina);
        a.resource = Some("https://partner.outlook.cn".into());
        a.tenant = Some("contoso.partner.onmschina.cn".into());
        let s = resolve("cn", &a).unwrap();
        assert_eq!(s.smtp.host, "smtp.partner.outlook.cn");
        assert_eq!(
            s.oauth.token_url,
            "https://login.partner.microsoftonline.cn/contoso.partner.onmschina.cn/oauth2/token"
        );
        assert!(s.oauth.scopes.is_empty());
        let e = s.oauth.client_id("cn", s.provider).unwrap_err();
        assert!(e.to_string().contains("portal.azure.cn"));
        // The Graph token's resource: graph_url's origin, unless graph_scopes say otherwise.
        let g = s.for_graph().unwrap();
        assert_eq!(
            g.oauth.resource.as_deref(),
            Some("https://microsoftgraph.chinacloudapi.cn")
        );
        a.graph_scopes = Some(vec!["https://graph.contoso.cn/.default".into()]);
        let g = resolve("cn", &a).unwrap().for_graph().unwrap();
        assert_eq!(
            g.oauth.resource.as_deref(),
            Some("https://graph.contoso.cn")
        );
        assert!(g.oauth.scopes.is_empty());
    }

    #[test]
    fn app_only_scope_and_custom_requirements() {
        let mut a = account(ProviderKind::Microsoft);
        a.flow = Some(Flow::ClientCredentials);
        let s = resolve("app", &a).unwrap();
        assert_eq!(s.oauth.scopes, ["https://outlook.office365.com/.default"]);
        let e = resolve("c", &account(ProviderKind::Custom)).unwrap_err();
        assert_eq!(e.exit_code(), 78);
        let g = resolve("g", &account(ProviderKind::Gmail)).unwrap();
        assert_eq!(g.oauth.token_url, "https://oauth2.googleapis.com/token");
    }

    #[test]
    fn well_known_domains_have_their_provider() {
        assert_eq!(
            for_email("japinli@hotmail.com"),
            Some(ProviderKind::Microsoft)
        );
        assert_eq!(for_email("a@Outlook.FR"), Some(ProviderKind::Microsoft));
        assert_eq!(for_email("a@hotmail.co.uk"), Some(ProviderKind::Microsoft));
        assert_eq!(for_email("a@live.com"), Some(ProviderKind::Microsoft));
        assert_eq!(for_email("a@msn.com"), Some(ProviderKind::Microsoft));
        assert_eq!(for_email("a@gmail.com"), Some(ProviderKind::Gmail));
        assert_eq!(for_email("a@googlemail.com"), Some(ProviderKind::Gmail));
        assert_eq!(for_email("a@contoso.com"), None);
        assert_eq!(for_email("a@outlook.contoso.com"), None);
        assert_eq!(for_email("a@live.example"), None);
        assert_eq!(for_email("no-at-sign"), None);
    }

    #[test]
    fn graph_defaults_per_cloud_and_flow() {
        let s = resolve("w", &account(ProviderKind::Microsoft)).unwrap();
        let g = s.graph.as_ref().unwrap();
        assert_eq!(g.url, "https://graph.microsoft.com");
        assert_eq!(
            g.scopes,
            [
                "https://graph.microsoft.com/Mail.Send",
                "https://graph.microsoft.com/Mail.ReadWrite",
                "offline_access"
            ]
        );
        assert_eq!(
            g.send_url("a@contoso.com"),
            "https://graph.microsoft.com/v1.0/me/sendMail"
        );
        let mut cn = account(ProviderKind::MicrosoftChina);
        cn.flow = Some(Flow::ClientCredentials);
        cn.transport = TransportKind::Graph;
        let s = resolve("cn", &cn).unwrap();
        let g = s.graph.as_ref().unwrap();
        assert_eq!(
            g.scopes,
            ["https://microsoftgraph.chinacloudapi.cn/.default"]
        );
        assert_eq!(
            g.send_url("a b@contoso.cn"),
            "https://microsoftgraph.chinacloudapi.cn/v1.0/users/a%20b@contoso.cn/sendMail"
        );
        // A delegated account that may use Graph consents to Mail.Send at sign-in.
        let mut auto = account(ProviderKind::Microsoft);
        auto.transport = TransportKind::Auto;
        let a = resolve("a", &auto).unwrap();
        assert_eq!(
            a.oauth.consent_scopes,
            [
                "https://graph.microsoft.com/Mail.Send",
                "https://graph.microsoft.com/Mail.ReadWrite"
            ]
        );
        assert!(a.for_graph().unwrap().oauth.consent_scopes.is_empty());
        assert!(
            resolve("w", &account(ProviderKind::Microsoft))
                .unwrap()
                .oauth
                .consent_scopes
                .is_empty()
        );
        // The token request for Graph: the same client, Graph's scopes.
        let for_graph = s.for_graph().unwrap();
        assert_eq!(for_graph.oauth.scopes, g.scopes);
        assert_eq!(for_graph.oauth.token_url, s.oauth.token_url);
        // Gmail has no Graph: transport = graph is a config error naming graph_url.
        let mut gm = account(ProviderKind::Gmail);
        gm.transport = TransportKind::Auto;
        let e = resolve("g", &gm).unwrap_err();
        assert!(e.to_string().contains("graph_url"), "{e}");
        assert!(
            resolve("g", &account(ProviderKind::Gmail))
                .unwrap()
                .graph
                .is_none()
        );
    }

    #[test]
    fn implicit_tls_defaults_to_465() {
        let mut a = account(ProviderKind::Custom);
        a.smtp_host = Some("mail.example".into());
        a.token_url = Some("https://idp.example/token".into());
        a.tls = Some(TlsMode::Implicit);
        assert_eq!(resolve("c", &a).unwrap().smtp.port, 465);
    }

    #[test]
    fn the_default_redirect_is_the_loopback_ip_that_thunderbirds_registration_holds() {
        let s = resolve("w", &account(ProviderKind::Microsoft)).unwrap();
        assert_eq!(s.oauth.redirect_uri, "http://127.0.0.1");
        check_redirect_registered("w", &s.oauth).unwrap();
    }

    #[test]
    fn thunderbirds_client_id_with_an_unregistered_redirect_is_refused_naming_aadsts50011() {
        for (redirect, ok) in [
            ("http://localhost", false),
            ("http://localhost:8080/", false),
            ("http://127.0.0.1/callback", false),
            ("https://127.0.0.1", false),
            ("http://127.0.0.1:8080", true),
            ("https://localhost", true),
            ("https://localhost/", true),
        ] {
            let mut a = account(ProviderKind::Microsoft);
            a.redirect_uri = Some(redirect.into());
            let s = resolve("w", &a).unwrap();
            match check_redirect_registered("w", &s.oauth) {
                Ok(()) => assert!(ok, "{redirect}"),
                Err(e) => {
                    assert!(!ok, "{redirect}");
                    assert_eq!(e.exit_code(), 78);
                    let e = e.to_string();
                    assert!(e.contains("AADSTS50011") && e.contains(redirect), "{e}");
                    assert!(
                        e.contains("\"http://127.0.0.1\"") && e.contains("\"https://localhost\""),
                        "{e}"
                    );
                }
            }
            // Another app's registration is its own business.
            a.client_id = Some("11111111-2222-3333-4444-555555555555".into());
            let s = resolve("w", &a).unwrap();
            check_redirect_registered("w", &s.oauth).unwrap();
        }
    }

    #[test]
    fn microsoft_china_defaults_to_tenant_organizations() {
        let mut a = account(ProviderKind::MicrosoftChina);
        a.client_id = Some("cid".into());
        let s = resolve("cn", &a).unwrap();
        assert_eq!(
            s.oauth.token_url,
            "https://login.partner.microsoftonline.cn/organizations/oauth2/v2.0/token"
        );
        assert!(s.oauth.authorize_url.contains("/organizations/"));
        let s = resolve("w", &account(ProviderKind::Microsoft)).unwrap();
        assert!(s.oauth.token_url.contains("/common/"));
    }

    #[test]
    fn a_cached_token_is_renewed_with_less_than_ten_minutes_left() {
        assert_eq!(REFRESH_MARGIN, 600);
        assert_eq!(crate::oauth::REFRESH_MARGIN, REFRESH_MARGIN);
    }

    #[test]
    fn a_refresh_without_a_recorded_grant_names_microsofts_audience_and_nothing_elsewhere() {
        let unknown = |kind| {
            resolve("x", &{
                let mut a = account(kind);
                a.smtp_host = Some("mail.example".into());
                a.token_url = Some("https://idp.example/token".into());
                a.client_id = Some("app".into());
                a
            })
            .unwrap()
            .refresh_scope_when_unknown()
        };
        let microsoft = unknown(ProviderKind::Microsoft).unwrap();
        assert!(
            microsoft.contains("https://outlook.office.com/SMTP.Send"),
            "{microsoft}"
        );
        assert_eq!(unknown(ProviderKind::Custom), None);
        assert_eq!(unknown(ProviderKind::Gmail), None);
    }

    #[test]
    fn auth_line_form_per_provider() {
        let form = |kind| {
            resolve("x", &{
                let mut a = account(kind);
                a.smtp_host = Some("mail.example".into());
                a.token_url = Some("https://idp.example/token".into());
                a
            })
            .unwrap()
            .smtp
            .auth_line
        };
        assert_eq!(form(ProviderKind::Microsoft), AuthLine::Inline);
        assert_eq!(form(ProviderKind::MicrosoftChina), AuthLine::Inline);
        assert_eq!(form(ProviderKind::Gmail), AuthLine::Rfc4954);
        assert_eq!(form(ProviderKind::Custom), AuthLine::Rfc4954);
    }

    #[test]
    fn sasl_auto_is_xoauth2_for_microsoft_and_oauthbearer_when_offered_elsewhere() {
        let mechanism = |kind, choice| {
            let mut a = account(kind);
            a.sasl = choice;
            sasl(&a)
        };
        for kind in [ProviderKind::Microsoft, ProviderKind::MicrosoftChina] {
            assert_eq!(mechanism(kind, SaslChoice::Auto), Sasl::Xoauth2);
        }
        for kind in [ProviderKind::Gmail, ProviderKind::Custom] {
            assert_eq!(
                mechanism(kind, SaslChoice::Auto),
                Sasl::OauthbearerWhenOffered
            );
        }
        assert_eq!(
            mechanism(ProviderKind::Microsoft, SaslChoice::Oauthbearer),
            Sasl::Oauthbearer
        );
        assert_eq!(
            mechanism(ProviderKind::Gmail, SaslChoice::Xoauth2),
            Sasl::Xoauth2
        );
    }

    #[test]
    fn prompts_for_a_refresh_token_as_each_provider_documents() {
        let params = |kind, scopes: Option<Vec<String>>| {
            let mut a = account(kind);
            a.smtp_host = Some("mail.example".into());
            a.token_url = Some("https://idp.example/token".into());
            a.scopes = scopes;
            resolve("x", &a).unwrap().oauth.authorize_params
        };
        assert!(params(ProviderKind::Microsoft, None).is_empty());
        assert!(params(ProviderKind::MicrosoftChina, None).is_empty());
        assert_eq!(
            params(ProviderKind::Gmail, None),
            [("access_type", "offline"), ("prompt", "consent")]
        );
        let oidc = vec!["openid".to_owned(), "offline_access".to_owned()];
        assert_eq!(
            params(ProviderKind::Custom, Some(oidc)),
            [("prompt", "consent")]
        );
        assert!(params(ProviderKind::Custom, Some(vec!["mail".into()])).is_empty());
    }

    #[test]
    fn microsoft_interactive_flows_ask_for_the_openid_scopes_app_only_does_not() {
        let scopes = |kind, flow| {
            let mut a = account(kind);
            a.client_id = Some("cid".into());
            a.flow = Some(flow);
            resolve("x", &a).unwrap().oauth.scopes
        };
        for kind in [ProviderKind::Microsoft, ProviderKind::MicrosoftChina] {
            for flow in [Flow::Authcode, Flow::Devicecode] {
                let s = scopes(kind, flow);
                for want in ["openid", "profile", "email", "offline_access"] {
                    assert!(s.iter().any(|x| x == want), "{kind:?} {flow:?} {s:?}");
                }
            }
            assert!(
                !scopes(kind, Flow::ClientCredentials)
                    .iter()
                    .any(|x| x == "openid")
            );
            assert!(!scopes(kind, Flow::Password).iter().any(|x| x == "openid"));
        }
        assert!(
            !scopes(ProviderKind::Gmail, Flow::Authcode)
                .iter()
                .any(|x| x == "openid")
        );
    }
}
