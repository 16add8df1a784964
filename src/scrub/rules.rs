//! The built-in detectors: one named rule each, a regex compiled once, an
//! optional validator that rejects look-alikes (Luhn for cards, mod-97 for
//! IBANs, address parsing for IPs), and the method a privacy reviewer expects.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use super::method::Method;

/// What a pattern match must also pass to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// Every match counts.
    None,
    /// The digits pass the Luhn checksum (card numbers).
    Luhn,
    /// The IBAN's mod-97 check is 1.
    Iban,
    /// A real IPv4 address.
    Ipv4,
    /// A real IPv6 address, not part of a longer word (`std::vector`, MACs, times).
    Ipv6,
    /// A US SSN with a possible area, group and serial.
    Ssn,
    /// A JSON Web Key's member, in a text that names a key type (`kty`).
    Jwk,
    /// An email address, not a file (`logo@2x.png`); a `_` after it is
    /// not part of it.
    Email,
    /// A bearer token: with a digit, or 16 characters (not `bearer token`).
    Bearer,
    /// A user's folder name; a Windows one may go on past spaces
    /// (`C:\Users\John Smith\`).
    UserPath,
    /// Path segments after a capability word (`/reset/`) that look
    /// generated, not written.
    UrlToken,
}

/// A built-in rule before compilation.
pub struct Builtin {
    /// Its name (metric label, `_meta` rule, config key).
    pub name: &'static str,
    /// The pattern; `(?x)` patterns carry their own comments.
    pub pattern: &'static str,
    /// The capture group that is redacted (0: the whole match).
    pub group: usize,
    /// Look-alike rejection.
    pub validator: Validator,
    /// The default method.
    pub method: Method,
}

/// Every built-in pattern rule. `ip` has two patterns (v4, v6) under one name.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "creditcard",
        pattern: r"(?x)
            (?:(?-u:\b)|_)(?:                                 # `_` too: `cc_4111...`, trimmed after
                [0-9]{13,19}                                  # digits only
              | [0-9]{4}(?:[\ .-][0-9]{4}){2,3}(?:[\ .-][0-9]{1,3})?  # 4-4-4-4(-3)
              | [0-9]{4}[\ .-][0-9]{6}[\ .-][0-9]{4,5}        # Amex and Diners: 4-6-5 / 4-6-4
            )(?:(?-u:\b)|_)",
        group: 0,
        validator: Validator::Luhn,
        method: Method::Mask,
    },
    Builtin {
        name: "email",
        pattern: r"(?x)
            [\p{L}\p{N}._%+-]+ @ [\p{L}\p{N}-]+ (?:\.[\p{L}\p{N}-]+)* \.\p{L}{2,}  # local@domain.tld, any letters
            (?: (?-u:\b) | _ | $ | [^\p{L}\p{N}_] )  # an end; after letters beyond ASCII (`.рф`), the
                                            # ASCII boundary fails: the next character, trimmed after,
                                            # as `_` is (`report_a@b.com_2024.csv`)",
        group: 0,
        validator: Validator::Email,
        method: Method::Replace,
    },
    Builtin {
        name: "ip",
        pattern: r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
        group: 0,
        validator: Validator::Ipv4,
        method: Method::Replace,
    },
    Builtin {
        name: "ip",
        // Candidates only; the validator checks the boundaries and parses.
        pattern: r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}",
        group: 0,
        validator: Validator::Ipv6,
        method: Method::Replace,
    },
    Builtin {
        name: "iban",
        pattern: r"(?x)
            (?-u:\b) [A-Za-z]{2} [0-9]{2} (?:\ ?[A-Za-z0-9]){11,30} (?-u:\b)  # country, check digits, BBAN",
        group: 0,
        validator: Validator::Iban,
        method: Method::Mask,
    },
    Builtin {
        name: "usssn",
        pattern: r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
        group: 0,
        validator: Validator::Ssn,
        method: Method::Mask,
    },
    Builtin {
        // Written with spaces or none, an SSN is nine digits like any
        // other: only after the words that say what it is
        // (`customer ssn 123 45 6789 on file`).
        name: "usssn",
        // A few words may come between (`SSN number:`, `SSN (verified):`,
        // `Social Security #:`, `ssn ->`, a line break).
        pattern: r"(?x)
            (?i: (?-u:\b) ssns? | social [\ _-]? security ) (?-u:\b)
            [^0-9]{0,20}
            ( [0-9]{3} [\ .-]{0,3} [0-9]{2} [\ .-]{0,3} [0-9]{4} ) (?-u:\b)",
        group: 1,
        validator: Validator::Ssn,
        method: Method::Mask,
    },
    Builtin {
        // A taxpayer's number after the words that say so: an ITIN (which
        // starts with 9, as no SSN does), a tax id (`Tax ID: 12-3456789`,
        // an EIN's form too). Not `tin` alone (Vietnamese `thông tin`,
        // information) nor `taxid` (NCBI's taxonomy ids).
        name: "usssn",
        pattern: r"(?x)
            (?i: (?-u:\b) (?: itin | tax [\ _-] id | taxpayer [\ _-]? id (?: entification )? ) ) (?-u:\b)
            [^0-9]{0,12}
            ( [0-9]{3} [\ .-]{0,3} [0-9]{2} [\ .-]{0,3} [0-9]{4} | [0-9]{2} - [0-9]{7} ) (?-u:\b)",
        group: 1,
        validator: Validator::None,
        method: Method::Mask,
    },
    Builtin {
        name: "bearer",
        pattern: r"(?x)
            (?i:bearer) \s+ ( [A-Za-z0-9\-._~+/]+ =* )  # the token after the scheme",
        group: 1,
        validator: Validator::Bearer,
        method: Method::Replace,
    },
    Builtin {
        name: "jwt",
        pattern: r"(?x)
            (?-u:\b) eyJ[A-Za-z0-9_-]+ \. [A-Za-z0-9_-]+ \. [A-Za-z0-9_-]*  # header.payload.signature",
        group: 0,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        name: "pemkey",
        pattern: r"(?x)
            -----BEGIN[A-Z\ ]*PRIVATE\ KEY(?:\ BLOCK)?-----     # PEM, and PGP's key blocks
            (?s:.*?)
            (?: -----END[A-Z\ ]*PRIVATE\ KEY(?:\ BLOCK)?----- | \z )  # a cut-off key is still a key",
        group: 0,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // A JSON Web Key's private member held in text, however the
        // language printed it: JSON (`"d": "..."`, escaped too), a
        // JavaScript object (`{ kty: 'EC', d: '...' }`), YAML, Ruby's
        // `"d"=>`, Go's `map[d:...]`, Java's `d=...`, PHP's `[d] =>`; when
        // a `kty` stands in the same braces (`Jwk`). In a JSON event, the
        // walk redacts them by key.
        name: "pemkey",
        pattern: r#"(?x)
            (?: ^ | [^A-Za-z0-9_] )  # not the end of a longer name
            [\\"'\[]{0,3} (?: d | p | q | dp | dq | qi | k ) [\\"'\]]{0,3}
            \s* (?: => | [:=] ) \s* [\\"']{0,3}
            ( [A-Za-z0-9_+/-]{8,} =* )  # the member's value, base64url or base64"#,
        group: 1,
        validator: Validator::Jwk,
        method: Method::Replace,
    },
    Builtin {
        name: "urlauth",
        pattern: r#"(?x)
            (?i:[a-z][a-z0-9+.-]*) ://
            ( [^\s/?\#@:]* :             # user: (the user may be empty)
              (?: [^\s/?\#]*              # the password, up to the last `@`: it may hold one
                | [^\s/?\#@:\[\]"]* [^\s/?\#@:\[\]"0-9] [^\s/?\#@:\[\]"]* / [^\s?\#@"]* )
            )                              # or a `/` (base64) after what is no port (`host:8080/a@b`,
                                           # `[::1]:5173/@vite` hold none) nor a quote
            @"#,
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // The `password` rule's other half (its key-value half is by hand):
        // SQL that sets a password (`ALTER ROLE x WITH PASSWORD '...'`,
        // `CREATE USER x IDENTIFIED BY '...'`, also through a function:
        // `SET password = crypt('...', gen_salt('bf'))`, `PASSWORD('...')`),
        // in breadcrumbs and spans.
        name: "password",
        pattern: r"(?x)
            (?i: (?-u:\b) password | identified \s+ by )
            (?: \s+ | \s* (?: = \s* )? (?: [A-Za-z_][A-Za-z0-9_.]* \s* )? \( \s* )
            ' ( [^']* ) '",
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // Passwords on command lines whose option takes no `=`: glued to
        // MySQL's `-p` (`mysql -uroot -phunter2`; a lone `-p` prompts), after
        // `sshpass -p`, `redis-cli -a`, `docker login -p`.
        name: "password",
        pattern: r#"(?x)
            (?-u:\b) (?: (?: mysql | mysqldump | mysqladmin | mariadb (?: -dump )? ) [^\n;|&]*? \s -p
                       | sshpass \s+ -p \s*
                       | redis-cli [^\n;|&]*? \s -a \s+
                       | docker \s+ login [^\n;|&]*? \s -p \s+ )
            ( '[^'\n]*' | "[^"\n]*" | [^\s'"-] \S* )"#,
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // A `.netrc` entry (curl's, ftp's, git's credentials file):
        // `machine HOST login USER password PASS`, or `default ...`, on
        // one line or over several.
        name: "password",
        pattern: r#"(?x)
            (?: (?-u:\b) machine \s+ [^\s"]+ | (?m: ^ ) [\ \t]* default )  # `default` starts a line
            (?: \s+ (?: login | account ) \s+ [^\s"]+ )* \s+ password \s+ ( [^\s"]+ )"#,
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // Redis's `AUTH [user] password`, a command alone on its line (as
        // breadcrumbs and spans hold it).
        name: "password",
        pattern: r"(?xm) ^ [\ \t]* AUTH [\ \t]+ (?: [^\s]+ [\ \t]+ )? ( [^\s]+ ) [\ \t\r]* $",
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // Redis's `CONFIG SET requirepass|masterauth password`.
        name: "password",
        pattern: r"(?xi) (?-u:\b) CONFIG \s+ SET \s+ (?: requirepass | masterauth ) \s+ ( [^\s]+ )",
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // MySQL's `SET PASSWORD FOR 'bob'@'%' = 'hunter2'` (or "hunter2").
        name: "password",
        pattern: r#"(?x)
            (?i: (?-u:\b) SET \s+ PASSWORD \s+ FOR ) [^=\n]* = \s* ['"] ( [^'"]* ) ['"]"#,
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // Password hashes, which a cracker turns back into the passwords of
        // the weaker ones: in a database's error about a row (PostgreSQL's
        // `DETAIL: Failing row contains (7, bob, pbkdf2_sha256$...)`,
        // MySQL's `Duplicate entry`), a dumped user, an `/etc/shadow` or
        // `.htpasswd` line. bcrypt (`$2b$12$...`), the crypt(3) family
        // (`$1$`, `$apr1$`, `$5$`, `$6$`, yescrypt's `$y$`), Argon2, and the
        // `algorithm$...` forms of Django and Werkzeug.
        name: "password",
        pattern: r"(?x)
            \$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}
          | \$(?:1|apr1)\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}
          | \$[56]\$(?:rounds=[0-9]+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}
          | \$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{1,64}\$[./A-Za-z0-9]{43}
          | \$argon2(?:id|i|d)\$v=[0-9]+\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+
          | (?-u:\b)pbkdf2_sha(?:256|1)\$[0-9]+\$[A-Za-z0-9./+=]{4,}\$[A-Za-z0-9+/=]{20,}
          | (?-u:\b)scrypt\$[0-9]+\$[A-Za-z0-9./+=]+\$[0-9]+\$[0-9]+\$[A-Za-z0-9+/=]{20,}
          | (?-u:\b)(?:pbkdf2:sha(?:256|512|1)(?::[0-9]+)?|scrypt:[0-9]+:[0-9]+:[0-9]+)\$[A-Za-z0-9]+\$[0-9a-f]{32,}",
        group: 0,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // curl's `-u user:password` (and `--user`) in a command line.
        name: "urlauth",
        pattern: r"(?x)
            (?: ^ | \s ) (?: -u | --user ) \s+ ( [^\s:]+ : \S+ )",
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // Oracle's `user/password@` (EZConnect): in a JDBC URL
        // (`jdbc:oracle:thin:scott/tiger@db:1521:ORCL`) and on the command
        // lines of its tools (`sqlplus system/pw@//db/XE`, `connect`).
        name: "urlauth",
        pattern: r#"(?x)
            (?: (?i:jdbc:oracle:[a-z0-9]+:)
              | (?-u:\b)(?i:sqlplus|sqlldr|expdp|impdp|rman|connect) \s+ )
            ( [A-Za-z0-9_$\#."]+ / [^\s@/]+ ) @"#,
        group: 1,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        name: "cloudkey",
        pattern: r"(?x)
            (?-u:\b)(?:
                (?:AKIA|ASIA)[0-9A-Z]{16}          # AWS access key ids
              | (?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}  # Stripe secret and restricted keys
              | gh[pousr]_[A-Za-z0-9]{30,}         # GitHub tokens
              | github_pat_[A-Za-z0-9_]{40,}
              | xox[abeprs]-[A-Za-z0-9-]{10,}      # Slack tokens (xoxe: refresh)
              | AIza[0-9A-Za-z_-]{35}              # Google API keys
              | glpat-[0-9A-Za-z_-]{20,}           # GitLab tokens
              | npm_[A-Za-z0-9]{36}                # npm tokens
              | whsec_[A-Za-z0-9+/=]{20,}          # Stripe webhook secrets
              | sk-(?:proj|ant|svcacct|admin|None)-[A-Za-z0-9_-]{20,}  # OpenAI and Anthropic keys
              | sk-[A-Za-z0-9]{48}                 # OpenAI keys of before 2024
              | SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}  # SendGrid keys
              | hooks\.slack\.com/(?:services|triggers|workflows)/[A-Za-z0-9/]{20,}  # Slack webhook URLs
              | discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]{40,}  # Discord webhook URLs
              | bot[0-9]{8,10}:AA[A-Za-z0-9_-]{30,}  # Telegram bot tokens (in their API URLs)
              | hf_[A-Za-z0-9]{34}                 # Hugging Face tokens
              | ya29\.[A-Za-z0-9_-]{20,}           # Google OAuth access tokens
              | GOCSPX-[A-Za-z0-9_-]{28}           # Google OAuth client secrets
              | sntry[su]_[A-Za-z0-9+/=_-]{40,}    # Sentry's own auth tokens
              | shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}  # Shopify tokens
              | hv[sbr]\.[A-Za-z0-9_-]{24,}        # HashiCorp Vault tokens
              | do[opr]_v1_[a-f0-9]{64}            # DigitalOcean tokens
              | pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}  # PyPI tokens
              | ATATT3x[A-Za-z0-9_=-]{50,}         # Atlassian API tokens
              | lin_api_[A-Za-z0-9]{40}            # Linear keys
              | PMAK-[a-f0-9]{24}-[a-f0-9]{34}     # Postman keys
              | gl(?:sa|c)_[A-Za-z0-9_+/=]{32,}    # Grafana tokens
              | NRAK-[A-Z0-9]{27}                  # New Relic user keys
              | gsk_[A-Za-z0-9]{52}                # Groq keys
              | sbp_[a-f0-9]{40}                   # Supabase tokens
              | dapi[a-f0-9]{32}                   # Databricks tokens
              | AGE-SECRET-KEY-1[0-9A-Z]{58}       # age private keys
              | AAAA[A-Za-z0-9_-]{7}:APA91b[A-Za-z0-9_-]{100,}  # Firebase server keys
              | hooks\.zapier\.com/hooks/catch/[0-9]+/[A-Za-z0-9]+  # Zapier webhook URLs
              | events\.pagerduty\.com/integration/[A-Za-z0-9]{32}  # PagerDuty integration keys
              | api\.vercel\.com/v1/integrations/deploy/[A-Za-z0-9_]+/[A-Za-z0-9]+  # Vercel deploy hooks
              | maker\.ifttt\.com/(?:trigger/[^/\s]+/(?:json/)?with/key|use)/[A-Za-z0-9_-]{16,}  # IFTTT keys
            )(?-u:\b)",
        group: 0,
        validator: Validator::None,
        method: Method::Replace,
    },
    Builtin {
        // Capability tokens in a URL's path: whoever holds the link may do
        // what it names. A password reset (Django's `/reset/<uid>/<token>/`,
        // Drupal's `/user/reset/<uid>/<time>/<hash>`, allauth's
        // `/password/reset/key/<key>/`, Rails' `/passwords/<token>/edit` and
        // `/password_resets/<token>/edit`), an email check or login link
        // (Discourse's `/session/email-login/<hex>`), an activation (Okta's
        // `/welcome/<token>`), an invitation (Slack's `/shared_invite/<code>`,
        // Ghost's `/signup/<token>/`), a magic login link, an unsubscribe
        // link, a webhook (Teams' `/IncomingWebhook/<hex>/<id>`, Mattermost's
        // `/hooks/<token>`, Netlify's `/build_hooks/<id>`), a key or token in
        // the path, a Rails app's signed link to a stored file
        // (`/rails/active_storage/blobs/redirect/<signed id>/invoice.pdf`). (`share` is no such word: `~/.local/share/` is a folder.) SDKs send them by default: `request.url` and
        // HTTP breadcrumbs. The word must be a whole segment; the validator
        // redacts, among the three segments after it (the pattern takes the
        // first, so that a word among them starts a match of its own), from the first that
        // looks generated to the last that does (`UrlToken`). A route
        // template (`/reset/{uidb64}/{token}/`, `/invite/:token`) is no match.
        name: "urltoken",
        pattern: r#"(?x)
            / (?i-u: password[-_]?resets? | passwords? | resets? (?: [-_]?password )? | forgot[-_]?password
                   | verify (?: [-_]?email )? | (?: email[-_]? )? verifications?
                   | confirm (?: [-_] (?: new[-_] )? email )? | confirmations?
                   | activate (?: [-_]account )? | activation
                   | (?: accept[-_]? | shared[-_]? )? invit (?: e | es | ation | ations ) | signup | welcome
                   | magic (?: [-_]?links? )? | (?: email[-_]? )? login[-_]links? | email[-_]login
                   | (?: signin | sign[-_]in ) [-_]links? | unsubscribe
                   | (?: access[-_]? )? tokens? | api[-_]?keys? | apikeys? | keys? | secrets?
                   | webhooks? | (?: build[-_]? )? hooks | incomingwebhook | active_storage )
            / [^/\s?\#"'<>()\[\]{},;\\|`]+  # the first segment; the validator reads on"#,
        group: 0,
        validator: Validator::UrlToken,
        method: Method::Replace,
    },
    Builtin {
        name: "userpath",
        pattern: r#"(?x)
            (?: ^ | [\s"'=(,;:\[<>] | file:///? )  # where a path starts (not `/api/Users/8812`)
            (?: /home/ | /Users/
              | [A-Za-z]:[\\/]{1,2}(?i:Users|Documents\ and\ Settings)[\\/]{1,2} )  # `\\` in a repr
            ( [^/\\\s"':]+ )  # the user name (spaces in Windows ones: `UserPath`)"#,
        group: 1,
        validator: Validator::UserPath,
        method: Method::Replace,
    },
];

/// Names of the built-in rules, including the key-based `password` rule.
pub const BUILTIN_NAMES: [&str; 13] = [
    "creditcard",
    "email",
    "ip",
    "iban",
    "usssn",
    "bearer",
    "jwt",
    "pemkey",
    "urlauth",
    "password",
    "cloudkey",
    "urltoken",
    "userpath",
];

/// Keys of `key=value` and `key: value` pairs inside text (query strings,
/// form bodies, cookies, log lines, JSON held in a string): the key, perhaps
/// quoted, and its separator. The value is found by hand after the match
/// ([`value_after`]), so that a value can never swallow the next pair's key:
/// in `failed: password=hunter2`, both `failed:` and `password=` are keys.
pub const KEY_PATTERN: &str = r#"(?x)
    (?:\\?["'])? [\p{L}\p{M}0-9_.\-\[\]]+ (?:\\?["'])?   # the key (letters of any script), perhaps quoted (\" in JSON held in JSON)
    (?: :(?:protected|private) | :"[A-Za-z0-9_\\]{1,200}":private )? \]?   # PHP's var_dump: ["k":protected]=>
    \s* [=:]                                         # its separator"#;

/// An XML element's start tag (`<password>`, `<ns:apiKey attr="x">`): its
/// name, without a namespace prefix, is group 1; its text runs to the next `<`.
pub const XML_TAG_PATTERN: &str =
    r"<(?:[A-Za-z_][A-Za-z0-9_.\-]*:)?([A-Za-z_][A-Za-z0-9_.\-]*)(?:\s[^<>]*)?>";

/// The key's range inside one [`KEY_PATTERN`] match.
pub fn key_in(m: &str) -> Option<std::ops::Range<usize>> {
    let b = m.as_bytes();
    let quote = |c: u8| c == b'"' || c == b'\'' || c == b'\\';
    let mut start = 0;
    while start < b.len() && quote(b[start]) {
        start += 1;
    }
    // The match ends with its separator.
    let mut end = b.len().checked_sub(1)?;
    while end > start && (b[end - 1].is_ascii_whitespace() || quote(b[end - 1])) {
        end -= 1;
    }
    // A quoted key ends at its closing quote (what follows it in PHP's
    // `["k":protected]`, `["k":"Class":private]` is no part of it).
    if let Some(at) = b[start..end].iter().position(|&c| quote(c)) {
        end = start + at;
    }
    (start < end).then_some(start..end)
}

/// Auth schemes whose credentials follow them after a space
/// (`Authorization: Basic dXNl...`): the value is both words.
const AUTH_SCHEMES: [&str; 8] = [
    "basic",
    "bearer",
    "token",
    "digest",
    "negotiate",
    "ntlm",
    "apikey",
    "hmac",
];

/// The value that follows a key's separator at `from`, after spaces (and
/// Ruby's `=>`). Quoted (also `b'...'`, and `\"...` in JSON held in a JSON
/// string): up to its closing quote, spaces and commas included. A list or
/// an object: up to its closing bracket. Else up to a separator (a quote,
/// `}`, a space; `;`, `,`, `&` and `?` before a space, the end or the next
/// key, so `password=ab&cd` is one value and `a=1&b=2` two; and `#` in a
/// query string, where it starts the fragment, but not elsewhere:
/// `Password=P@ss#word1`), and an auth scheme takes the word after it too.
/// `None` when it is empty.
pub fn value_after(s: &str, from: usize) -> Option<std::ops::Range<usize>> {
    let b = s.as_bytes();
    let spaces = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let quote = |i: usize| matches!(b.get(i), Some(b'"' | b'\''));
    let mut start = spaces(from);
    if b.get(start) == Some(&b'>') {
        start = spaces(start + 1);
        if let Some(dumped) = php_dumped(s, start) {
            return Some(dumped);
        }
    }
    if matches!(b.get(start), Some(b'b' | b'r' | b'u')) && quote(start + 1) {
        start += 1;
    }
    let escaped = b.get(start) == Some(&b'\\') && quote(start + 1);
    if escaped {
        start += 1;
    }
    let stop = |from: usize, end: &dyn Fn(u8) -> bool| -> usize {
        b[from..]
            .iter()
            .position(|&c| end(c))
            .unwrap_or(b.len() - from)
    };
    // A `,` or `;` ends the value only before a space, the end, or the next
    // `key=` (`a=1,b=2`; `password=abc,def` is one value).
    // A byte of a key (`filter%5Bx%5D` too).
    let key_byte = |c: &u8| c.is_ascii_alphanumeric() || b"_.-[]%".contains(c);
    let next_key = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(key_byte) {
            i += 1;
        }
        i > from && matches!(b.get(spaces(i)), Some(b'=' | b':'))
    };
    // Whether the key before `from` is a query string's (after `?` or `&`).
    let in_query = {
        let mut i = from;
        while i > 0 && matches!(b[i - 1], b'=' | b':' | b' ' | b'\t') {
            i -= 1;
        }
        while i > 0 && key_byte(&b[i - 1]) {
            i -= 1;
        }
        i > 0 && matches!(b[i - 1], b'?' | b'&')
    };
    let word = |from: usize| {
        let mut i = from;
        while let Some(&c) = b.get(i) {
            let list = matches!(c, b',' | b';' | b'&' | b'?')
                && b.get(i + 1)
                    .is_none_or(|&n| n.is_ascii_whitespace() || next_key(i + 1));
            // `&amp;` in HTML ends a query's value too.
            let amp = c == b'&' && b[i + 1..].starts_with(b"amp;");
            let fragment = c == b'#' && in_query;
            if list || amp || fragment || c.is_ascii_whitespace() || b"\"'}".contains(&c) {
                break;
            }
            i += 1;
        }
        i - from
    };
    let len = match b.get(start) {
        Some(&q @ (b'"' | b'\'')) if escaped => {
            start += 1;
            stop(start, &|c| c == q || c == b'\\')
        }
        Some(&q @ (b'"' | b'\'')) => {
            start += 1;
            // A quote escaped with a backslash (`"hun\"ter2"`) does not end it.
            let mut at = start;
            loop {
                at += stop(at, &|c| c == q || c == b'\\');
                if b.get(at) != Some(&b'\\') {
                    break at - start;
                }
                at = (at + 2).min(b.len());
            }
        }
        Some(&open @ (b'[' | b'{')) => {
            let close = if open == b'[' { b']' } else { b'}' };
            let mut depth = 0usize;
            let closed = b[start..].iter().position(|&c| {
                if c == open {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                }
                depth == 0
            });
            closed.map_or(b.len() - start, |at| at + 1)
        }
        _ => {
            let first = word(start);
            let next = spaces(start + first);
            let scheme = &s[start..start + first];
            let authed =
                next > start + first && AUTH_SCHEMES.iter().any(|a| a.eq_ignore_ascii_case(scheme));
            let second = if authed { word(next) } else { 0 };
            if second > 0 {
                next + second - start
            } else {
                first
            }
        }
    };
    // Every stop byte is ASCII, so the range ends on a character boundary.
    (len > 0).then_some(start..start + len)
}

/// A value as PHP's `var_dump` writes it after `=>` (and a newline), at
/// `at`: `string(7) "hunter2"` whole, its length too (which would tell the
/// secret's), reading its 7 bytes (quotes inside included) to the closing
/// quote; `int(1234)` and `float(1.5)` what the parentheses hold,
/// `array(2) {...}` and `object(User)#1 (2) {...}` the whole block. `None`
/// for anything else.
fn php_dumped(s: &str, at: usize) -> Option<std::ops::Range<usize>> {
    let b = s.as_bytes();
    let rest = &s[at..];
    let kind_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let open = at + kind_len;
    if b.get(open) != Some(&b'(') {
        return None;
    }
    let close = open + memchr::memchr(b')', &b[open..])?;
    let inside = open + 1..close;
    match &rest[..kind_len] {
        "string" => {
            let len: usize = s[inside].parse().ok()?;
            let quote = close + 2;
            (b.get(close + 1) == Some(&b' ') && b.get(quote) == Some(&b'"')).then_some(())?;
            // The length counts bytes; a string cut short, or longer than it
            // says, runs to its closing quote instead.
            let end = (quote + 1).saturating_add(len);
            let exact = b.get(end) == Some(&b'"') && s.is_char_boundary(end);
            let end = match exact {
                true => end + 1,
                false => memchr::memchr(b'"', &b[quote + 1..]).map_or(b.len(), |i| quote + 2 + i),
            };
            Some(at..end)
        }
        "int" | "float" => Some(inside).filter(|r| !r.is_empty()),
        "array" | "object" => {
            let brace = close + memchr::memchr(b'{', &b[close..])?;
            // Only spaces, `#N` and `(N)` between the kind and its block.
            let between = &b[close + 1..brace];
            if !between
                .iter()
                .all(|c| b" #()".contains(c) || c.is_ascii_digit())
            {
                return None;
            }
            let mut depth = 0usize;
            let end = b[brace..].iter().position(|&c| {
                depth = match c {
                    b'{' => depth + 1,
                    b'}' => depth - 1,
                    _ => depth,
                };
                depth == 0
            });
            Some(brace..end.map_or(b.len(), |i| brace + i + 1))
        }
        _ => None,
    }
}

/// Whether a value is a log template's slot named after its key
/// (`password={password}`, `apiKey={api_key}`): case and `_` aside.
pub fn is_named_slot(key: &str, value: &str) -> bool {
    let Some(name) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) else {
        return false;
    };
    let plain = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | '.' | '@' | '$'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    !name.is_empty() && plain(name) == plain(key)
}

/// Whether `key`, found at `at` in `s`, is a one-time credential in a
/// query string (after `?` or `&`): an OAuth authorization code (`code`,
/// where the query also carries `state=`: `/callback?code=...&state=...`),
/// or the `code`, `ticket`, `hash` or `confirmation` of a link that resets
/// a password, confirms an address or signs in (ASP.NET Identity's
/// `/Account/ResetPassword?code=`, Auth0's `/lo/reset?ticket=`, Symfony's
/// login links' `&hash=`, Strapi's `/email-confirmation?confirmation=`).
pub fn is_link_code(s: &str, at: usize, key: &str) -> bool {
    if !s[..at].ends_with(['?', '&']) {
        return false;
    }
    let link = || {
        // The URL's path: from its start (after a space or quote) to its `?`.
        let Some(query) = s[..at].rfind('?') else {
            return false;
        };
        let mut start = s[..query]
            .rfind(|c: char| c.is_ascii_whitespace() || matches!(c, '"' | '\'' | '(' | '<'))
            .map_or(0, |at| at + 1);
        // Not the host's name (`login.example.com/app.js?hash=...`).
        if let Some(host) = s[start..query].find("://") {
            let host = start + host + 3;
            start = s[host..query].find('/').map_or(query, |at| host + at);
        }
        let path = s[start..query].to_ascii_lowercase();
        LINK_WORDS.iter().any(|w| path.contains(w))
    };
    match key {
        "code" => s.contains("state=") || link(),
        "ticket" | "hash" | "confirmation" => link(),
        _ => false,
    }
}

/// Words in a URL's path that make its query's `code` a credential (see
/// [`is_link_code`]).
const LINK_WORDS: [&str; 10] = [
    "reset",
    "password",
    "confirm",
    "verif",
    "activat",
    "invit",
    "magic",
    "login",
    "signin",
    "unsubscribe",
];

/// Query keys that [`is_link_code`] judges: text that holds one is searched
/// for pairs ([`KeyMatcher::mentions`]).
const LINK_KEYS: [&str; 5] = ["state=", "code=", "ticket=", "hash=", "confirmation="];

/// Whether the key at `key_start` starts its line (after spaces), or a
/// YAML list item on it (`- secrets:`).
pub fn starts_line(s: &str, key_start: usize) -> bool {
    let line_start = line_start(s, key_start);
    let prefix = s[line_start..key_start].trim_start_matches([' ', '\t']);
    prefix.is_empty() || prefix == "- "
}

/// The values of a YAML block under a key that starts its line and ends
/// it with its `:` (the match ending at `from`), as a config dump or a
/// Kubernetes manifest in a log line gives them:
///
/// ```yaml
/// secrets:
///   api: sk-...        # a mapping: each entry's value
///   db:
///     - hunter2        # a list: each item
/// ```
///
/// The block is the lines indented deeper than the key (a list may stand
/// at the key's own indent, as YAML allows). Its keys stay: they say what
/// was there. `None` when no such block follows (a value on the key's own
/// line, or a next line that is no mapping entry or list item: a stack
/// trace after `Unexpected token:`), and the value is found as any other;
/// an empty list when the block holds only what names no secret (a file's
/// path, a variable, a sentence).
pub fn yaml_block(
    s: &str,
    key: &str,
    key_start: usize,
    from: usize,
) -> Option<Vec<std::ops::Range<usize>>> {
    let b = s.as_bytes();
    let line_start = line_start(s, key_start);
    let starts = starts_line(s, key_start);
    let bare = starts && s[line_start..key_start].bytes().all(|c| c == b' ');
    if !s[..from].ends_with(':') {
        return None;
    }
    let line_end = memchr::memchr(b'\n', &b[from..]).map_or(b.len(), |i| from + i);
    let mut rest = s[from..line_end].trim();
    // An anchor names the block (`secrets: &secrets`).
    if rest.starts_with('&') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r).trim_start();
    }
    // A block scalar (`password: |`, `client_secret: >-`): every line of
    // the block is its text.
    let indicator = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    let scalar = matches!(indicator, "|" | ">" | "|-" | ">-" | "|+" | ">+");
    if !(rest.is_empty() || rest.starts_with('#') || scalar) || line_end == b.len() {
        return None;
    }
    // The block is indented deeper than the key, or than its line when a
    // log line's prefix comes first (`... DEBUG secrets:`).
    let column = match starts {
        true => key_start - line_start,
        false => s[line_start..].len() - s[line_start..].trim_start_matches(' ').len(),
    };
    // A mapping under a key that names many secrets (`secrets:`,
    // `credentials:`, a Secret's `data:`) holds them; under one that names
    // one (`token:`, `password:`, `session:`, `secretKeyRef:`) it holds
    // settings (`issuer:`, `min_length:`, `store:`, `name:`), and its own
    // sensitive keys are found as any key is.
    let holds_many = key.ends_with(['s', 'S']) || matches!(key, "data" | "stringData");
    let mut values = Vec::new();
    let mut yaml = scalar;
    let mut at = line_end + 1;
    while at < b.len() {
        let end = memchr::memchr(b'\n', &b[at..]).map_or(b.len(), |i| at + i);
        let line = s[at..end].trim_end_matches('\r');
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];
        let item = content.starts_with("- ") || content == "-";
        let inside = indent > column || (indent == column && item && bare && !scalar);
        let (line_at, next) = (at, end + 1);
        at = next;
        if content.is_empty() || (content.starts_with('#') && !scalar) {
            continue;
        }
        if !inside {
            break;
        }
        let (mut from, mut text) = (line_at + indent, content);
        if scalar {
            values.push(from..from + text.len());
            continue;
        }
        if item {
            let dash = 1 + text[1..].len() - text[1..].trim_start().len();
            (from, text) = (from + dash, &text[dash..]);
        }
        // `key: value`, or an environment's `KEY=value`.
        let key_len = text
            .bytes()
            .take_while(|c| !matches!(c, b':' | b'=' | b' ' | b'#'))
            .count();
        let after_key = &text[key_len..];
        let keyed = key_len > 0
            && (after_key.starts_with('=')
                || after_key.starts_with(':')
                    && after_key[1..].bytes().next().is_none_or(|c| c == b' '));
        if !yaml && !keyed && !item {
            // Not YAML's: no block.
            return None;
        }
        yaml = true;
        if keyed {
            let after = &text[key_len + 1..];
            let lead = after.len() - after.trim_start().len();
            (from, text) = (from + key_len + 1 + lead, after.trim_start());
        }
        // A sentence (a validation message: `- This password is too
        // common.`): four words or more, ended as sentences are.
        let word = from..from + text.find(' ').unwrap_or(text.len());
        let sentence = starts_prose(s, word)
            && text.split(' ').count() >= 4
            && text.ends_with(['.', '!', '?', ')']);
        let setting = keyed && !holds_many;
        let said =
            text.is_empty() || text.starts_with('#') || is_reference(text) || sentence || setting;
        if !said {
            values.push(from..from + text.len());
        }
    }
    // A block with nothing to redact is still the key's value.
    yaml.then_some(values)
}

/// Whether a value in a config names where a secret is kept rather than
/// holding it: a file's path (`file: ./db_password.txt`), a variable
/// (`$DB_PASS`, `${DB_PASS}`) or a CI expression (`${{ secrets.NPM_TOKEN }}`).
fn is_reference(value: &str) -> bool {
    // A path has a folder or a file's extension (`/run/secrets/db`,
    // `./db_password.txt`); base64 may start with `/` too (`/9j/4AAQ...`,
    // a JPEG's), and ends with `=` or has neither.
    let rooted = value.starts_with("./") || value.starts_with('/') || value.starts_with("~/");
    let folder = rooted && value[1..].contains('/') && !value.ends_with('=');
    let file = value.rsplit_once('.').is_some_and(|(_, ext)| {
        (1..=5).contains(&ext.len()) && ext.bytes().all(|c| c.is_ascii_alphabetic())
    });
    let path = rooted && !value.contains(' ') && (value.starts_with("./") || folder || file);
    path || value.starts_with("${{") || is_placeholder(value)
}

/// Whether `key` is a Kubernetes Secret's `data` or `stringData` in a text
/// that holds a Secret's manifest (`kind: Secret`, in YAML or JSON): their
/// values are the secrets, base64'd or not, under keys of any name
/// (`tls.key`, `.dockerconfigjson`, `DATABASE_URL`).
pub fn is_secret_data(s: &str, key: &str, at: usize) -> bool {
    if !matches!(key, "data" | "stringData") {
        return false;
    }
    let b = s.as_bytes();
    match enclosing(s, at, at) {
        // JSON (or a flow mapping): a `kind` naming a Secret in the same
        // braces (not a ConfigMap's beside it in a `List`).
        Some(span) => memchr::memmem::find_iter(&b[span.clone()], b"kind")
            .any(|k| kind_is_secret(&b[span.start + k + 4..span.end])),
        // YAML: a `kind: Secret` line in the same document (between `---`
        // lines: a dry run's ConfigMap beside a Secret keeps its data).
        None => {
            let (from, to) = (at.saturating_sub(NEAR), (at + NEAR).min(b.len()));
            let doc_start =
                memchr::memmem::rfind(&b[from..at], b"\n---").map_or(from, |i| from + i + 4);
            let doc_end = memchr::memmem::find(&b[at..to], b"\n---").map_or(to, |i| at + i);
            memchr::memmem::find_iter(&b[doc_start..doc_end], b"kind:").any(|k| {
                let k = doc_start + k;
                (k == 0 || b[k - 1] == b'\n') && kind_is_secret(&b[k + 4..doc_end])
            })
        }
    }
}

/// Whether what follows a `kind` key names a Secret: `: Secret`,
/// `":"Secret"`, `\":\"Secret\"` (its quotes and separator, then the word).
fn kind_is_secret(after: &[u8]) -> bool {
    fn skip(v: &[u8]) -> &[u8] {
        let n = v
            .iter()
            .take_while(|c| matches!(c, b'"' | b'\'' | b'\\') || c.is_ascii_whitespace())
            .count();
        &v[n..]
    }
    let Some(v) = skip(after).strip_prefix(b":") else {
        return false;
    };
    let v = skip(v);
    v.starts_with(b"Secret") && !v.get(6).is_some_and(u8::is_ascii_alphanumeric)
}

/// The key named in two words that ends at `at + key.len()` in `s`, when
/// the pattern found `key` alone after a word and a space (`Invalid API
/// key: ...`, `'Secret Key': ...`): `API key`, for the key matcher to
/// judge as it judges any key (`api key` and the like are among its
/// words; `cache key` is not).
pub fn two_word_key<'s>(s: &'s str, at: usize, key: &str) -> Option<&'s str> {
    if !key.eq_ignore_ascii_case("key") || !s[..at].ends_with([' ', '\t']) {
        return None;
    }
    let before = s[..at].trim_end();
    let word = before
        .bytes()
        .rposition(|c| !c.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    (word < before.len()).then(|| &s[word..at + key.len()])
}

/// The option a command-line flag names (`--password`, `-token`), when the
/// argument is a flag alone, whose value is the next argument (`sys.argv`,
/// `process.argv`); or the key an argument names when it is a key alone
/// with its separator (`token:`, `password =`), as a console line's
/// arguments give it (`console.log("token:", t)`: the browser and Node
/// SDKs' breadcrumbs keep them in `data.arguments`). `None` for anything
/// else, `--password=x` and `token: x` included.
pub fn flag_name(arg: &str) -> Option<&str> {
    let word = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
    if let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
        let b = name.as_bytes();
        return (b.first()?.is_ascii_alphabetic() && b.iter().all(word)).then_some(name);
    }
    let b = arg.as_bytes().trim_ascii_end();
    let b = b.strip_suffix(b":").or_else(|| b.strip_suffix(b"="))?;
    let b = b.trim_ascii_end();
    // From the end: a line of code before its `:` (`def f(x):`) fails at once.
    let key = |c: &u8| word(c) || *c == b' ';
    (b.len() <= 64 && b.iter().rev().all(key) && b.first()?.is_ascii_alphabetic())
        .then(|| &arg[..b.len()])
}

/// Long options followed by a value in a command line held in one string
/// (`mysql --password hunter2`): the name's range and where its value may
/// start. Only `--` options: a lone `-` starts too many words of prose.
pub fn long_options(s: &str) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> + '_ {
    let b = s.as_bytes();
    memchr::memmem::find_iter(b, b"--").filter_map(move |at| {
        if at > 0 && !b[at - 1].is_ascii_whitespace() {
            return None;
        }
        let start = at + 2;
        let len = b[start..]
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || b"_.-".contains(c)))
            .unwrap_or(b.len() - start);
        let end = start + len;
        let spaced = matches!(b.get(end), Some(b' ' | b'\t'));
        (len > 0 && b[start].is_ascii_alphabetic() && spaced).then_some((start..end, end))
    })
}

/// The value of a sensitive key found at `key_start` in `s`, whose match
/// (key and separator) ends at `from`: [`value_after`], but a `Cookie:` or
/// `Set-Cookie:` in text takes the rest of its line (every cookie in it),
/// and a key of a connection string (`Server=db;Password=my pass;...`, at
/// the start or after a `;`) takes everything up to the next `;`, spaces
/// included.
pub fn value_for(
    s: &str,
    key_start: usize,
    key: &str,
    from: usize,
) -> Option<std::ops::Range<usize>> {
    let b = s.as_bytes();
    let start = from
        + b[from..]
            .iter()
            .take_while(|c| **c == b' ' || **c == b'\t')
            .count();
    let quoted = matches!(b.get(start), Some(b'"' | b'\'' | b'[' | b'{'));
    let until = |stop: &dyn Fn(u8) -> bool| {
        let end = b[start..]
            .iter()
            .position(|&c| stop(c))
            .map_or(b.len(), |i| start + i);
        let end = start + s[start..end].trim_end().len();
        (end > start).then_some(start..end)
    };
    if !quoted && (key.eq_ignore_ascii_case("cookie") || key.eq_ignore_ascii_case("set-cookie")) {
        return until(&|c| c == b'\n' || c == b'\r');
    }
    // A connection string: the key starts the text or follows a `;`, and
    // the next `;` is followed by the next `Key=`.
    let listed = s[..key_start].trim_end().is_empty() || s[..key_start].trim_end().ends_with(';');
    // (Or the `;` ends the text: `...;Password=P@ss#word1;`.)
    let next_pair = memchr::memchr(b';', &b[from..char_floor(s, from + NEAR)]).is_some_and(|i| {
        let rest = s[from + i + 1..].trim_start();
        if rest.is_empty() {
            return true;
        }
        let key_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || b" _.-".contains(c))
            .count();
        key_len > 0 && rest.as_bytes().get(key_len) == Some(&b'=')
    });
    let value = value_after(s, from)?;
    // A call with a literal in it (`encrypt('x')`): the value runs to the
    // closing parenthesis (or the line's end).
    if !quoted && s[value.clone()].ends_with('(') && matches!(b.get(value.end), Some(b'"' | b'\''))
    {
        let close = b[value.end..]
            .iter()
            .position(|&c| c == b')' || c == b'\n')
            .map_or(b.len(), |at| {
                value.end + at + usize::from(b[value.end + at] == b')')
            });
        return Some(value.start..close);
    }
    // Spaces inside it do not end it (a `,` before the next key still does).
    if !quoted
        && listed
        && b.get(from - 1) == Some(&b'=')
        && next_pair
        && b.get(value.end) == Some(&b' ')
    {
        return until(&|c| c == b';' || c == b'\n' || c == b'\r');
    }
    Some(value)
}

/// The value held by a field that a `name="..."` names (the name having
/// ended at `name_end`, the `name` key starting at `key_start`), where the
/// name is no key itself: a multipart form part's content
/// (`Content-Disposition: form-data; name="password"`, its headers, a blank
/// line, the content up to the next boundary line), and an HTML element's
/// `value="..."` in the same tag (`<input name="password" value="...">`).
pub fn named_value(s: &str, key_start: usize, name_end: usize) -> Option<std::ops::Range<usize>> {
    let b = s.as_bytes();
    // Each name's look around it is bounded (see [`NEAR`]): a line longer
    // than that is read from [`NEAR`] bytes before the name.
    let near = key_start.saturating_sub(NEAR);
    let line = memchr::memrchr(b'\n', &b[near..key_start]).map_or(near, |i| near + i + 1);
    let ahead = char_floor(s, name_end + NEAR);
    if b[line..key_start]
        .to_ascii_lowercase()
        .windows(9)
        .any(|w| w == b"form-data")
    {
        let rest = &s[name_end..];
        let blank = [("\r\n\r\n", 4), ("\n\n", 2)]
            .iter()
            .filter_map(|(sep, len)| rest.find(sep).map(|at| at + len))
            .min()?;
        let start = name_end + blank;
        let end = s[start..].find("\n--").map_or(s.len(), |at| start + at);
        let end = start + s[start..end].trim_end().len();
        return (end > start).then_some(start..end);
    }
    // YAML's list of pairs (a Kubernetes container's `env`): `- name:
    // DB_PASSWORD` then `value: ...` on the next line, under the name; a
    // Terraform plan's `+ name = "DB_PASSWORD"` then `+ value = "..."`.
    let prefix_blank = b[line..key_start].iter().all(|c| b" -+~".contains(c));
    let line_end = memchr::memchr(b'\n', &b[name_end..ahead]).map(|at| name_end + at);
    if let Some(line_end) = line_end.filter(|_| prefix_blank) {
        let column = key_start - line;
        let next_start = line_end + 1;
        let next = &s[next_start..ahead.max(next_start)];
        let next = &next[..next.find('\n').unwrap_or(next.len())];
        let indent = next.len() - next.trim_start_matches([' ', '+', '~']).len();
        let rest = next[indent..].strip_prefix("value").map(str::trim_start);
        let rest = rest.and_then(|r| r.strip_prefix(':').or_else(|| r.strip_prefix('=')));
        if let Some(rest) = rest.filter(|_| indent == column) {
            let value = rest.trim().trim_end_matches('\r');
            let mut start = next_start + next.len() - rest.trim_start().len();
            let mut end = start + value.len();
            // A quoted value keeps its quotes.
            let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
            if quoted {
                (start, end) = (start + 1, end - 1);
            }
            return (end > start).then_some(start..end);
        }
    }
    // In the same braces, before or after the name: `{"name":
    // "DB_PASSWORD", "value": "..."}` (an ECS task definition, `kubectl -o
    // json`), `{name: DB_PASSWORD, value: ...}` (YAML's flow style),
    // CloudFormation's `ParameterValue`.
    let object_of = enclosing(s, key_start, name_end).filter(|span| {
        b[span.start] == b'{' && memchr::memmem::find(&b[span.clone()], b"alue").is_some()
    });
    if let Some(span) = object_of {
        let span = span.start..char_floor(s, span.end);
        let object = &s[span.clone()];
        let lower = object.to_ascii_lowercase();
        for (at, _) in lower.match_indices("value") {
            let key_from = lower.as_bytes()[..at]
                .iter()
                .rposition(|c| !c.is_ascii_alphabetic())
                .map_or(0, |i| i + 1);
            let whole = &lower[key_from..at + 5];
            let after = object[at + 5..]
                .trim_start_matches(['"', '\'', '\\'])
                .trim_start();
            let separated = after.starts_with([':', '=']);
            // A member's key, not a word in a string: after `{` or `,`.
            let opens = object.as_bytes()[..key_from]
                .iter()
                .rev()
                .find(|c| !c.is_ascii_whitespace() && !matches!(c, b'"' | b'\'' | b'\\'))
                .is_none_or(|c| matches!(c, b'{' | b','));
            if (whole == "value" || whole == "parametervalue") && separated && opens {
                let from = span.start + object.len() - after.len() + 1;
                if let Some(value) = value_after(s, from) {
                    // Up to the closing brace, when the braces close.
                    let closed = matches!(b[span.end - 1], b'}' | b']' | b')');
                    let limit = span.end - usize::from(closed);
                    return (value.start < limit).then_some(value.start..value.end.min(limit));
                }
            }
        }
    }
    let open = near + memchr::memrchr(b'<', &b[near..key_start])?;
    if memchr::memchr(b'>', &b[open..key_start]).is_some() {
        return None;
    }
    let close = memchr::memchr(b'>', &b[name_end..ahead]).map_or(ahead, |at| name_end + at);
    let tag = s[open..close].to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = tag[from..].find("value") {
        let at = open + from + at;
        from = at - open + 5;
        let separated = at > 0 && b[at - 1].is_ascii_whitespace();
        let after = s[at + 5..close].trim_start();
        if separated && after.starts_with('=') {
            let value = value_after(s, close - after.len() + 1)?;
            return (value.start < close).then_some(value.start..value.end.min(close));
        }
    }
    None
}

/// Whether an unquoted value is code rather than data: a call without a
/// literal in it (`getToken()`, `auth.token_for(user)`), or a name under
/// `self.` or `this.` (`self.api_key`). A literal's value stays a secret:
/// `token = "..."` is quoted, and `encrypt('x')` holds a quote.
pub fn is_code(value: &str) -> bool {
    let name = |s: &str| {
        s.bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
    };
    if let Some(args) = value.strip_suffix(')') {
        if let Some((callee, args)) = args.split_once('(') {
            return name(callee) && !args.bytes().any(|c| matches!(c, b'"' | b'\'' | b'`'));
        }
    }
    let member = value
        .strip_prefix("self.")
        .or_else(|| value.strip_prefix("this."));
    member.is_some_and(|m| !m.is_empty() && name(m)) || is_placeholder(value)
}

/// A SQL query's placeholder (`session_key = %s)`, `password = $1`,
/// `token = :token`, `%(auth_token)s`, `@p1`), with the `)` or `,` that
/// may follow it in the query.
fn is_placeholder(value: &str) -> bool {
    let v = value.trim_end_matches([')', ',', ';']);
    let word = |w: &str| {
        w.bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && w.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    // A log template's slot by position (`token={0}`); one by name is the
    // caller's to judge (`password={password}`, but ODBC's `PWD={Summer24}`).
    let slot = v
        .strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit()));
    // printf's slot by position (`%2$s`).
    let positional = v.strip_prefix('%').is_some_and(|r| {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        let rest = &r.as_bytes()[digits..];
        digits > 0 && rest.len() == 2 && rest[0] == b'$' && rest[1].is_ascii_alphabetic()
    });
    slot || positional
        || matches!(v, "%s" | "%d" | "?")
        || v.strip_prefix('$')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        // A variable, not its value: GraphQL's `password: $password`, a
        // shell's `DB_PASSWORD=$DB_PASS` or `${DB_PASS}`.
        || v.strip_prefix('$').is_some_and(word)
        || v.strip_prefix("${")
            .map(|n| n.strip_suffix('}').unwrap_or(n))
            .is_some_and(word)
        || v.strip_prefix(':').is_some_and(word)
        || v.strip_prefix('@').is_some_and(word)
        || v.strip_prefix("%(")
            .and_then(|n| n.strip_suffix(")s"))
            .is_some_and(word)
}

/// Whether a value in text says what state a secret is in rather than
/// holding one: `Token: expired.`, `password: required`, `api_key: null`,
/// `secret: none` (an error message or a config dump with the setting
/// unset; GitHub Actions' `secrets: inherit`). One word, case aside, and
/// a `.` or `!` after it.
pub fn is_status_word(value: &str) -> bool {
    const WORDS: [&str; 23] = [
        "inherit",
        "expired",
        "invalid",
        "missing",
        "required",
        "none",
        "null",
        "nil",
        "undefined",
        "empty",
        "blank",
        "unset",
        "true",
        "false",
        "revoked",
        "valid",
        "absent",
        "present",
        "redacted",
        "hidden",
        "disabled",
        "enabled",
        "unknown",
    ];
    let word = value.trim_end_matches(['.', '!']);
    word.len() <= 9 && WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Whether a key in text is a source file's name before its line number
/// (`TokenService.java:88`, `auth.js:10:5`, `sessions_controller.rb:14`):
/// a stack frame, not a key.
pub fn is_source_file(key: &str) -> bool {
    const SOURCE: [&str; 22] = [
        "java", "kt", "scala", "js", "mjs", "cjs", "ts", "tsx", "jsx", "go", "rb", "py", "php",
        "cs", "swift", "m", "c", "cc", "cpp", "h", "rs", "ex",
    ];
    key.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && SOURCE.contains(&ext))
}

/// Whether the value after a `key: ` in text is the first word of prose,
/// not a secret: letters alone, and another word follows
/// (`password: This field is required.`, `token: invalid signature`,
/// `unexpected token: u at line 1`). A value with a digit or a symbol
/// (`password: hunter2 expired`) stays a secret, as does a last word.
pub fn is_prose(s: &str, value: std::ops::Range<usize>) -> bool {
    let b = s.as_bytes();
    let spaced = value.start >= 2 && b[value.start - 1] == b' ' && b[value.start - 2] == b':';
    spaced && starts_prose(s, value)
}

/// Whether a value found on a line after its key's (`s[value]`, the key
/// at `key_start`) is the key's: its line is indented deeper than the
/// key's (`Generated password:\n  Xy7k...`), it is no word of letters
/// with more after it (a stack frame: `at JSON.parse (...)`,
/// `at <anonymous>:1:6`) and no markup (`<!DOCTYPE html>`). A line at the
/// key's own indent is the next line of a log (`Traceback ...`).
pub fn next_line_value(s: &str, key_start: usize, value: std::ops::Range<usize>) -> bool {
    let indent = |at: usize| {
        let line = line_start(s, at);
        s[line..].len() - s[line..].trim_start_matches([' ', '\t']).len()
    };
    let b = s.as_bytes();
    let word =
        b[value.clone()].iter().all(u8::is_ascii_alphabetic) && b.get(value.end) == Some(&b' ');
    indent(value.start) > indent(key_start) && !word && b[value.start] != b'<'
}

/// Whether `value` is a word of letters alone with another word after it:
/// the start of a sentence, or of a stack frame (`at JSON.parse (...)`).
pub fn starts_prose(s: &str, value: std::ops::Range<usize>) -> bool {
    let b = s.as_bytes();
    b[value.clone()].iter().all(u8::is_ascii_alphabetic)
        && b.get(value.end) == Some(&b' ')
        && b.get(value.end + 1).is_some_and(u8::is_ascii_alphabetic)
}

/// Sensitive key words matched anywhere in a key, case-insensitively.
const SENSITIVE_SUBSTRINGS: [&str; 128] = [
    // A kubeconfig's client key (its certificate is public).
    "client-key-data",
    "client_key_data",
    // Social security and taxpayer numbers by their names in full.
    "socialsecurity",
    "social_security",
    "social-security",
    "taxpayer",
    "password",
    "passwd",
    "secret",
    "api_key",
    "api-key",
    "api.key",
    "apikey",
    "access_token",
    "access-token",
    "authorization",
    "credential",
    "private_key",
    "private-key",
    "privatekey",
    "token",
    "session",
    "sessid",
    "cookie",
    "csrf",
    "xsrf",
    "mysql_pwd",
    "passphrase",
    "signature",
    "x-api-key",
    "api key",
    // Azure connection strings and keys, AWS-style access keys.
    "accountkey",
    "accesskey",
    "subscription-key",
    "functions-key",
    "samlresponse",
    // One-time and recovery codes, card security codes.
    "passcode",
    // Firebase's email-action links: `oobCode`.
    "oobcode",
    "recovery_code",
    "recoverycode",
    "recovery-code",
    // Framework master keys (Rails' RAILS_MASTER_KEY, Laravel's APP_KEY).
    "master_key",
    "app_key",
    // Other keys: S3-style access keys, encryption, signing and HMAC keys.
    "access_key",
    "access-key",
    "encryption_key",
    "encryptionkey",
    "signing_key",
    "signingkey",
    "priv_key",
    "privkey",
    "hmac_key",
    "hmackey",
    "enc_key",
    // Card security codes and PINs.
    "security_code",
    "securitycode",
    "pin_code",
    "pincode",
    // Card codes as payment forms name them (Authorize.net's `cardCode`),
    // and one-time codes of second factors and sign-up checks.
    "cardcode",
    "card_code",
    "mfa_code",
    "mfacode",
    "verification_code",
    "verificationcode",
    // Passwords whose key glues a word before a short one (`$dbpass`,
    // `DB_PWD` is a word already), and more keys: Fernet (Airflow's
    // `FERNET_KEY`), AES, JWT and licence keys, Datadog's application
    // key, Honeycomb's key header (`X-Honeycomb-Team`).
    "dbpass",
    "dbpwd",
    "userpass",
    "rootpass",
    "rootpw",
    "adminpass",
    "adminpwd",
    "sshpass",
    "smtppass",
    "ftppass",
    "mailpass",
    "fernet_key",
    "fernetkey",
    "aes_key",
    "aeskey",
    "jwt_key",
    "license_key",
    "license-key",
    "licensekey",
    "licence_key",
    "application_key",
    "application-key",
    "honeycomb-team",
    // OAuth's PKCE verifier and OAuth 1's verifier.
    "code_verifier",
    "oauth_verifier",
    // The same keys named in prose (`Invalid access key: ...`), which
    // `two_word_key` reads in text.
    "access key",
    "private key",
    "license key",
    "licence key",
    "encryption key",
    "signing key",
    "master key",
    "subscription key",
    // "Password" in other languages, as login and sign-up forms name their
    // fields: German (`Passwort`, and `Paßwort` as it was spelled before
    // 1996), Spanish (`contraseña`, `contrasena`), French, Portuguese,
    // Dutch, Swedish (`lösenord`, `losenord`), Finnish, Danish, Hungarian
    // (`jelszó`), Polish, Turkish, Russian and Ukrainian (`пароль`,
    // `Пароль`), Vietnamese (`mật khẩu`, `mat_khau`), Indonesian and Malay
    // (`kata sandi`), Hebrew (`סיסמה`, `סיסמא`), Hindi, Thai, Chinese,
    // Japanese, Korean.
    "passwort",
    "paßwort",
    "kennwort",
    "contrase",
    "motdepasse",
    "mot_de_passe",
    "mot-de-passe",
    "senha",
    "wachtwoord",
    "senord",
    "salasana",
    "adgangskode",
    "jelsz",
    "hasło",
    "şifre",
    "sifre",
    "mật khẩu",
    "mật_khẩu",
    "matkhau",
    "mat_khau",
    "katasandi",
    "kata_sandi",
    "kata sandi",
    "סיסמ",
    "पासवर्ड",
    "รหัสผ่าน",
    "ароль",
    "密码",
    "密碼",
    "パスワード",
    "비밀번호",
];

/// Short sensitive words that count only as a whole segment of a key
/// (`auth`, `x-auth`, `authKey`; not `author`; `db_pass`, not `passport`;
/// `connect.sid`, not `side`).
///
/// Among them, "password" in other languages where it is short or part of
/// longer words: Polish and Czech (`haslo`, not `hasLocation`; `heslo`),
/// Italian, Romanian and Turkish (`parola`), Spanish (`clave`), French
/// (`mdp`, not `mdpi`), Norwegian (`passord`, not `passorder`).
const SENSITIVE_WORDS: [&str; 25] = [
    "auth", "pwd", "ssn", "pass", "pw", "sid", "cvc", "cvv", "otp", "sig", "pin", "haslo", "heslo",
    "parola", "clave", "mdp", "passord",
    // Password field names of web forms (`psw`), and more.
    "psw", "pswd", "pword", "creds", "totp", "2fa",
    // Dropbox's shared links' key, django-sesame's login token.
    "rlkey", "sesame",
];

/// Keys whose values are client IP addresses.
const IP_KEYS: [&str; 11] = [
    "ip_address",
    "ip",
    "remote_addr",
    "http_x_forwarded_for",
    "x-forwarded-for",
    "x-real-ip",
    "http_x_real_ip",
    "client_ip",
    "http_client_ip",
    "x-client-ip",
    "forwarded",
];

/// What a key says about the values under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Nothing.
    None,
    /// They are secrets.
    Secret,
    /// A number is a count; anything else a secret.
    Counts,
}

/// Decides which keys are sensitive, without allocating: one
/// case-insensitive Aho-Corasick pass over the key, or two when the
/// configured words have an automaton of their own beside a shared one of
/// the built-in words (see [`KeyMatcher::beside`]). Cheap to clone.
#[derive(Clone)]
pub struct KeyMatcher {
    /// Substrings first, then the short words (ids from `words_from`).
    automaton: Arc<AhoCorasick>,
    /// Pattern ids from here on are words that must stand as a segment.
    words_from: usize,
    /// The id of the built-in `token` (`usize::MAX` without the built-ins).
    token: usize,
    /// The first of the ids that only [`KeyMatcher::mentions`] counts
    /// (`_key`, `state=`; `usize::MAX` without the built-ins).
    mention_only: usize,
    /// Configured words (substrings) that are not in `automaton`.
    own: Option<Arc<AhoCorasick>>,
}

/// An automaton of short literal words, case-insensitive; a DFA when
/// `dfa`, whatever the number of words, else of the crate's choosing (a DFA
/// up to 100 words, then a slower NFA).
fn automaton(patterns: &[&str], dfa: bool) -> Arc<AhoCorasick> {
    Arc::new(
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(dfa.then_some(AhoCorasickKind::DFA))
            .build(patterns)
            .expect("a few short literal words always build"),
    )
}

impl KeyMatcher {
    /// The configured `sensitive_fields`, and the built-in words when
    /// `builtin`, in one automaton: the fewest instructions per key. A DFA
    /// however many words are configured (the crate would build a slower NFA
    /// past 100 words, +9% instructions per event): about 250 KB with the
    /// built-in words, whose bytes beyond ASCII widen its alphabet, 330 KB
    /// with 150 configured ones, under 1 ms to build.
    pub fn new(extra: &[String], builtin: bool) -> KeyMatcher {
        let builtin_substrings: &[&str] = if builtin { &SENSITIVE_SUBSTRINGS } else { &[] };
        let builtin_words: &[&str] = if builtin { &SENSITIVE_WORDS } else { &[] };
        let substrings: Vec<&str> = builtin_substrings
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str).filter(|s| !s.is_empty()))
            .collect();
        let words_from = substrings.len();
        let token = substrings
            .iter()
            .position(|s| builtin && *s == "token")
            .unwrap_or(usize::MAX);
        let mut patterns: Vec<&str> = substrings
            .into_iter()
            .chain(builtin_words.iter().copied())
            .collect();
        // Last, for `mentions` only: text that holds `OPENAI_KEY=...` or a
        // link's `code=...` is searched for pairs; a key is judged by
        // [`is_env_key`] and [`is_link_code`], not by these matches.
        let mention_only = match builtin {
            true => {
                let first = patterns.len();
                patterns.push("_key");
                patterns.extend(LINK_KEYS);
                first
            }
            false => usize::MAX,
        };
        KeyMatcher {
            automaton: automaton(&patterns, true),
            words_from,
            token,
            mention_only,
            own: None,
        }
    }

    /// `shared`'s words and the configured `extra` ones, these in a small
    /// automaton of their own (a few KB): for the many projects of a config
    /// that each name their own words. A key takes a second pass, about 10%
    /// more instructions per event (`BENCHMARKS.md`).
    pub fn beside(shared: &KeyMatcher, extra: &[String]) -> KeyMatcher {
        let extra: Vec<&str> = extra
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        KeyMatcher {
            own: (!extra.is_empty()).then(|| automaton(&extra, false)),
            ..shared.clone()
        }
    }

    /// Whether the built-in words are on (and with them the judgements of
    /// [`is_env_key`] and [`is_link_code`]).
    pub fn builtin(&self) -> bool {
        self.mention_only != usize::MAX
    }

    /// Whether a sensitive word occurs anywhere in `text`: the cheap test
    /// before looking for `key=value` pairs in it.
    pub fn mentions(&self, text: &str) -> bool {
        self.automaton.is_match(text) || self.own.as_ref().is_some_and(|own| own.is_match(text))
    }

    /// Whether values under this key are secrets.
    pub fn is_sensitive(&self, key: &str) -> bool {
        self.classify(key) == Sensitivity::Secret
    }

    /// What values under this key are: secrets; counts when they are
    /// numbers and secrets else (plural `tokens`: `input_tokens: 120`, but
    /// `oauth_tokens: {...}` holds tokens); or neither.
    pub fn classify(&self, key: &str) -> Sensitivity {
        let b = key.as_bytes();
        let mut counts = false;
        // Whether a match at `start..end` makes the key a secret.
        let mut secret_at = |start: usize, end: usize, substring: bool, token: bool| {
            if describes(key, start, end) {
                return false;
            }
            if substring {
                // `input_tokens`, `max_tokens`: counts (of a model's tokens), not secrets.
                let plural = token
                    && b.get(end).is_some_and(|c| c.eq_ignore_ascii_case(&b's'))
                    && b.get(end + 1).is_none_or(|c| !c.is_ascii_alphanumeric());
                counts |= plural;
                return !plural;
            }
            // A word of its own: after a separator, or a camelCase hump (`basicAuth`).
            let hump =
                start > 0 && b[start].is_ascii_uppercase() && b[start - 1].is_ascii_lowercase();
            let before = start == 0 || !b[start - 1].is_ascii_alphanumeric() || hump;
            let after = end == b.len() || !b[end].is_ascii_lowercase();
            before && after
        };
        let secret = self.automaton.find_overlapping_iter(key).any(|m| {
            let id = m.pattern().as_usize();
            id < self.mention_only
                && secret_at(m.start(), m.end(), id < self.words_from, id == self.token)
        }) || self.own.as_ref().is_some_and(|own| {
            own.find_overlapping_iter(key)
                .any(|m| secret_at(m.start(), m.end(), true, false))
        });
        let env_key = self.mention_only != usize::MAX && is_env_key(key);
        match (secret || env_key, counts) {
            (true, _) => Sensitivity::Secret,
            (false, true) => Sensitivity::Counts,
            (false, false) => Sensitivity::None,
        }
    }

    /// Whether values under this key are client IP addresses.
    pub fn is_ip_field(key: &str) -> bool {
        IP_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
    }
}

/// Whether a key is an environment variable's name that ends in `_KEY`
/// (`OPENAI_KEY`, `MAILGUN_KEY`, `SECRET_KEY_BASE` aside): upper case,
/// digits and `_` only. Such variables hold keys; the built-in words
/// cannot list every vendor's name before it.
fn is_env_key(key: &str) -> bool {
    let Some(name) = key.strip_suffix("_KEY") else {
        return false;
    };
    let word = name.rsplit('_').next().unwrap_or_default();
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
        && !NOT_SECRET_KEYS.contains(&word)
}

/// Words before `_KEY` that name no secret: keys of data (`PRIMARY_KEY`,
/// `CACHE_KEY`, an S3 object's `S3_KEY`), and `GPG_KEY`, which Python's
/// container images set to a public key's fingerprint.
const NOT_SECRET_KEYS: [&str; 16] = [
    "PRIMARY",
    "FOREIGN",
    "SORT",
    "PARTITION",
    "CACHE",
    "ROUTING",
    "IDEMPOTENCY",
    "DEDUP",
    "SHARD",
    "GROUP",
    "LOOKUP",
    "HASH",
    "OBJECT",
    "S3",
    "GPG",
    "PUBLIC",
];

/// Words after a sensitive word that make the key about the secret, not
/// the secret itself: `token_type`, `signature_algorithm`,
/// `llm.token_count.prompt`, `auth.provider`, `session.sampled`.
const DESCRIPTORS: [&str; 43] = [
    "type",
    "types",
    "size",
    "status",
    "algorithm",
    "alg",
    "count",
    "counts",
    "provider",
    "providers",
    "sampled",
    "method",
    "methods",
    "expires",
    "expiry",
    "length",
    "len",
    "policy",
    "url",
    "uri",
    "endpoint",
    "enabled",
    "required",
    "version",
    // Times, sizes and names of a secret, and what handles it
    // (`password_changed_at`, `session_duration`, `secret_name`,
    // `secretArn`, `SESSION_COOKIE_AGE`, `PASSWORD_HASHERS`).
    "at",
    "changed",
    "created",
    "updated",
    "duration",
    "age",
    "ttl",
    "timeout",
    "name",
    "arn",
    "engine",
    "backend",
    "backends",
    "hashers",
    "model",
    // Usage figures (`completion_tokens_details`, `token_usage`), and
    // sampling (`sessionSampleRate`, the Replay SDK's option).
    "details",
    "usage",
    "sample",
    "rate",
];

/// Whether the sensitive word found at `start..end` of `key` is described
/// rather than held: a descriptor word follows it (see [`DESCRIPTORS`]);
/// it is a Java class's (`io.jsonwebtoken.ExpiredJwtException`, what a
/// `RuntimeException(cause)` message starts with); `tokenizer`; or .NET's
/// public `PublicKeyToken`.
fn describes(key: &str, start: usize, end: usize) -> bool {
    let rest = &key.as_bytes()[end..];
    let tail = |word: &[u8]| {
        rest.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    let prefix = &key.as_bytes()[..start];
    if rest.get(..2).is_some_and(|r| r.eq_ignore_ascii_case(b"iz"))
        || tail(b"exception")
        || tail(b"error")
        || (prefix.len() >= 9 && prefix[prefix.len() - 9..].eq_ignore_ascii_case(b"publickey"))
    {
        return true;
    }
    // The words after it: split at separators and camelCase humps.
    let mut from = 0;
    for i in 0..=rest.len() {
        let boundary = i == rest.len()
            || !rest[i].is_ascii_alphanumeric()
            || (i > from && rest[i].is_ascii_uppercase() && rest[i - 1].is_ascii_lowercase());
        if boundary {
            let word = &rest[from..i];
            if !word.is_empty()
                && DESCRIPTORS
                    .iter()
                    .any(|d| d.as_bytes().eq_ignore_ascii_case(word))
            {
                return true;
            }
            from = if i < rest.len() && rest[i].is_ascii_alphanumeric() {
                i
            } else {
                i + 1
            };
        }
    }
    false
}

/// Applies a validator to the match `haystack[start..end]`: what of it to
/// redact (a card or an email without the `_` the pattern took, a card cut
/// at an earlier separator, a Windows user name over its spaces), or `None`
/// for a look-alike.
pub fn validate(
    validator: Validator,
    haystack: &str,
    start: usize,
    end: usize,
) -> Option<std::ops::Range<usize>> {
    let s = &haystack[start..end];
    let whole = match validator {
        Validator::Luhn => return card(haystack, start, end),
        Validator::Email => return email(haystack, start, end),
        Validator::UserPath => return Some(start..user_end(haystack, start, end)),
        Validator::UrlToken => return url_token(haystack, start, end),
        Validator::None => true,
        Validator::Iban => {
            // The pattern may run on into the next words (`... 0130 00 BIC
            // COBADEFF`): the longest prefix that ends before a space and
            // checks out is the IBAN.
            let ends = s.match_indices(' ').map(|(at, _)| at).chain([s.len()]);
            let mut ends: Vec<usize> = ends.collect();
            ends.reverse();
            return ends
                .into_iter()
                .find(|&at| iban(&s[..at]))
                .map(|at| start..start + at);
        }
        // Java's `host/203.0.113.7:5432` (an `InetSocketAddress`) reads as
        // a product's version but for its port.
        Validator::Ipv4 => {
            let port = haystack.as_bytes()[end..].starts_with(b":")
                && haystack
                    .as_bytes()
                    .get(end + 1)
                    .is_some_and(u8::is_ascii_digit);
            (port || !is_version(haystack, start)) && ipv4(s)
        }
        Validator::Ipv6 => {
            // Not part of a longer word (`std::vector`), with a digit (not
            // `Feed::add`, a PHP method), and a real address.
            let b = haystack.as_bytes();
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b':' || c == b'_';
            let bounded = (start == 0 || !word(b[start - 1])) && (end == b.len() || !word(b[end]));
            bounded
                && s.bytes().any(|c| c.is_ascii_digit())
                && s.parse::<std::net::Ipv6Addr>().is_ok()
        }
        Validator::Bearer => s.len() >= 16 || s.bytes().any(|c| c.is_ascii_digit()),
        Validator::Jwk => jwk_beside(haystack, start, end),
        Validator::Ssn => {
            // `123-45-6789`, `123 45 6789` or `123456789`.
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
            area != "000"
                && area != "666"
                && !area.starts_with('9')
                && group != "00"
                && serial != "0000"
        }
    };
    whole.then_some(start..end)
}

/// Whether a `kty` stands in the same braces as the member whose value is
/// `haystack[start..end]`: between the nearest `{`, `[` or `(` before it
/// and the nearest `}`, `]` or `)` after it (a JSON object, Go's `map[...]`,
/// Java's `JWK{...}`; the whole text when there are none: YAML).
fn jwk_beside(haystack: &str, start: usize, end: usize) -> bool {
    let b = haystack.as_bytes();
    match enclosing(haystack, start, end) {
        Some(span) => memchr::memmem::find(&b[span], b"kty").is_some(),
        // No braces: YAML, whose `kty:` starts a line (near the member).
        None => {
            let window = &b[start.saturating_sub(NEAR)..(end + NEAR).min(b.len())];
            memchr::memmem::find_iter(window, b"kty:").any(|at| {
                window[..at]
                    .iter()
                    .rev()
                    .take_while(|c| **c != b'\n')
                    .all(|c| *c == b' ' || *c == b'\t')
            })
        }
    }
}

/// Where the line holding `at` starts, looked for up to [`NEAR`] bytes
/// back (a longer line is read from there: it starts no YAML).
fn line_start(s: &str, at: usize) -> usize {
    let near = at.saturating_sub(NEAR);
    match memchr::memrchr(b'\n', &s.as_bytes()[near..at]) {
        Some(i) => near + i + 1,
        None => char_floor(s, near),
    }
}

/// The greatest char boundary of `s` at or before `at` (`s.len()` past it).
fn char_floor(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// How far around a match the checks that read its context look, each way
/// (its braces, its YAML document, a `kty:` line): every match of a rule
/// may look, so the look is bounded, or a long text of matches would cost
/// its length squared.
const NEAR: usize = 2048;

/// The span of the innermost `{...}`, `[...]` or `(...)` around
/// `haystack[start..end]`, brackets included, counting the pairs between
/// (a `key_ops` list between a key's `kty` and its `d`); `None` when no
/// bracket encloses it within [`NEAR`] bytes. Quotes are not read: a
/// bracket inside a string counts too.
fn enclosing(haystack: &str, start: usize, end: usize) -> Option<std::ops::Range<usize>> {
    let b = haystack.as_bytes();
    let mut depth = 0usize;
    let mut open = None;
    for at in (start.saturating_sub(NEAR)..start).rev() {
        match b[at] {
            b'}' | b']' | b')' => depth += 1,
            b'{' | b'[' | b'(' if depth == 0 => {
                open = Some(at);
                break;
            }
            b'{' | b'[' | b'(' => depth -= 1,
            _ => {}
        }
    }
    let open = open?;
    let mut depth = 0usize;
    let limit = (end + NEAR).min(b.len());
    for (at, &c) in b.iter().enumerate().take(limit).skip(end) {
        match c {
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' if depth == 0 => return Some(open..at + 1),
            b'}' | b']' | b')' => depth -= 1,
            _ => {}
        }
    }
    Some(open..limit)
}

/// Of the (up to) three path segments after a capability word (the match
/// `haystack[start..end]` is `/reset/` and the first), the span from the
/// first that looks generated to the end of the last that does. A segment
/// ends where the pattern's first does (a `?`, a quote, a bracket...).
fn url_token(haystack: &str, start: usize, end: usize) -> Option<std::ops::Range<usize>> {
    let b = haystack.as_bytes();
    // Where the pattern's segments end (any space: `\s`).
    let ends_segment = |c: char| c.is_whitespace() || "/?#\"'<>()[]{},;\\|`".contains(c);
    // After the word's closing `/`.
    let mut at = start + 1 + haystack[start + 1..end].find('/')? + 1;
    let mut found: Option<std::ops::Range<usize>> = None;
    for _ in 0..3 {
        let len = haystack[at..]
            .char_indices()
            .find(|(_, c)| ends_segment(*c))
            .map_or(b.len() - at, |(i, _)| i);
        if is_generated(&haystack[at..at + len]) {
            found = Some(found.map_or(at, |f| f.start)..at + len);
        }
        at += len;
        if b.get(at) != Some(&b'/') {
            break;
        }
        at += 1;
    }
    found
}

/// Whether a path segment looks generated rather than written:
/// - 16 characters or more, with a run of six or more letters and digits
///   that mixes both (`c3k2lp-8f1e…`, hex, UUIDs, most base64);
/// - or 16 letters and digits or more, at least a quarter of them upper
///   case and a quarter lower (base64 without a digit: `QwErTy-UiOpAsD_fGhJ`);
/// - or 8 to 15 letters and digits alone, two or more of each kind
///   (`Kp8Xz2Qa`, an invitation code).
///
/// Not words (`2024-annual-report`, `ResetPasswordDoneView`), ids of digits
/// alone, files (`page-8f2c1a9b3d4e5f60.js`, `useOAuth2Callback.ts`: a built
/// asset's or a module's name, which source maps are matched by), nor an
/// Ethereum address (`0x` and 40 hex digits: public).
fn is_generated(segment: &str) -> bool {
    let b = segment.as_bytes();
    let file = segment.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && (1..=5).contains(&ext.len())
            && ext.bytes().all(|c| c.is_ascii_alphanumeric())
            && ext.bytes().any(|c| c.is_ascii_alphabetic())
    });
    let address =
        b.len() == 42 && segment.starts_with("0x") && b[2..].iter().all(u8::is_ascii_hexdigit);
    if file || address {
        return false;
    }
    let count = |f: fn(&u8) -> bool| b.iter().filter(|c| f(c)).count();
    let (upper, lower, digits) = (
        count(u8::is_ascii_uppercase),
        count(u8::is_ascii_lowercase),
        count(u8::is_ascii_digit),
    );
    let alnum = upper + lower + digits;
    if (8..16).contains(&b.len()) {
        return alnum == b.len() && upper >= 2 && lower >= 2 && digits >= 2;
    }
    b.len() >= 16
        && ((alnum >= 16 && upper * 4 >= alnum && lower * 4 >= alnum)
            || segment
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|run| {
                    let digits = run.bytes().filter(u8::is_ascii_digit).count();
                    run.len() >= 6 && digits > 0 && digits < run.len()
                }))
}

/// Whether four numbers at `start` are a version, not an address: a
/// product's in a user agent (`Chrome/131.0.0.0`: a word that starts a
/// token, then `/`; a URL's path, `ipinfo.io/203.0.113.7`, is no product),
/// or after `Version=` or `version: ` (.NET assembly names, logs). (`v1.2.3.4`
/// never matches: the pattern wants a word boundary before the digits.)
fn is_version(haystack: &str, start: usize) -> bool {
    let before = &haystack.as_bytes()[..start];
    if let Some(product) = before.strip_suffix(b"/") {
        let word = product
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_')
            .count();
        let token_start = product.len() - word;
        // A product's name starts upper case (`Chrome/`, `Edg/`, `OPR/`; the
        // lower-case ones, `curl/7.88.1`, have three numbers): Java's
        // `host/203.0.113.7`, a host's name, is lower case.
        return word > 0
            && product[token_start].is_ascii_uppercase()
            && (token_start == 0 || matches!(product[token_start - 1], b' ' | b'(' | b';' | b'"'));
    }
    let lower = |tail: &[u8], word: &[u8]| {
        tail.len() >= word.len() && tail[tail.len() - word.len()..].eq_ignore_ascii_case(word)
    };
    let trimmed = before.trim_ascii_end();
    let trimmed = trimmed
        .strip_suffix(b"=")
        .or_else(|| trimmed.strip_suffix(b":"))
        .unwrap_or(trimmed)
        .trim_ascii_end();
    // A word of its own: `rebuild 10.0.0.5` is no build number.
    let word = |w: &[u8]| {
        lower(trimmed, w)
            && trimmed
                .len()
                .checked_sub(w.len() + 1)
                .is_none_or(|at| !trimmed[at].is_ascii_alphanumeric())
    };
    word(b"version") || word(b"build")
}

/// A dotted IPv4 address, also with zero-padded parts (`010.000.000.001`,
/// which `Ipv4Addr` refuses).
fn ipv4(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        if part.is_empty() || part.len() > 3 || part.parse::<u8>().is_err() {
            return false;
        }
    }
    parts == 4
}

/// An email match without a `_` the pattern took after it; `None` for a
/// file name that looks like one (`logo@2x.png`).
fn email(haystack: &str, start: usize, end: usize) -> Option<std::ops::Range<usize>> {
    let end = match haystack[start..end].chars().next_back() {
        Some(c) if !c.is_alphanumeric() => end - c.len_utf8(),
        _ => end,
    };
    // An address whose local part has an apostrophe (`o'neil@`) is taken
    // whole, back to where its local part starts.
    let mut start = start;
    loop {
        let mut before = haystack[..start].chars().rev();
        match before.next() {
            Some(c) if c.is_alphanumeric() || "._%+-".contains(c) => start -= c.len_utf8(),
            Some('\'') if before.next().is_some_and(char::is_alphanumeric) => start -= 1,
            _ => break,
        }
    }
    let tld = haystack[start..end].rsplit('.').next().unwrap_or_default();
    let file = FILE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(tld));
    // A DSN (`https://<public key>@o1.ingest.sentry.io/42`): a key of hex
    // digits before a URL's host is no one's address, and no secret (SDKs
    // ship it in browser code).
    let local = &haystack[start..end].split('@').next().unwrap_or_default();
    let key = haystack[..start].ends_with("://")
        && local.len() >= 16
        && local.bytes().all(|c| c.is_ascii_hexdigit());
    // An SSH or scp target (`git@github.com:acme/app.git`, `deploy@db:/srv`):
    // a host and a path, not an address. What follows the `:` must be a
    // path: an address before a `:` and a word (a cache key,
    // `user:alice@example.com:prefs`; `alice@example.com: invalid`) is
    // still an address.
    let after = haystack.as_bytes()[end..]
        .strip_prefix(b":")
        .unwrap_or_default();
    let path = &after[..after
        .iter()
        .position(|c| c.is_ascii_whitespace() || b"\"'`,;)]}".contains(c))
        .unwrap_or(after.len())];
    let remote = after.first().is_some_and(|c| !c.is_ascii_digit())
        && (path.contains(&b'/') || path.ends_with(b".git"));
    (!file && !key && !remote).then_some(start..end)
}

/// File extensions that are no top-level domain: an `@` before them is a
/// file name's (`icon@2x.png`).
const FILE_EXTENSIONS: [&str; 12] = [
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "json", "map", "txt",
];

/// The longest card number in `haystack[start..end]`: the whole match
/// without the `_` the pattern takes around it, or the match cut at an
/// earlier separator (a card followed by another number,
/// `4111 1111 1111 1111 203`, is still a card). Checked with Luhn.
fn card(haystack: &str, start: usize, end: usize) -> Option<std::ops::Range<usize>> {
    let b = haystack.as_bytes();
    let start = start + usize::from(b[start] == b'_');
    let end = end - usize::from(end > start && b[end - 1] == b'_');
    let candidate = &haystack[start..end];
    if luhn(candidate) {
        return Some(start..end);
    }
    candidate
        .char_indices()
        .rev()
        .filter(|(_, c)| matches!(c, ' ' | '-' | '.'))
        .map(|(i, _)| start + i)
        .find(|&cut| luhn(&haystack[start..cut]))
        .map(|cut| start..cut)
}

/// The end of a user's folder name found at `start..end`: a Windows one
/// (after `\`) goes on over single spaces when a `\` follows the last
/// word (`C:\Users\John Smith\AppData`); else the match stands.
fn user_end(haystack: &str, start: usize, end: usize) -> usize {
    let b = haystack.as_bytes();
    if start == 0 || b[start - 1] != b'\\' {
        return end;
    }
    let name = |c: u8| !(c.is_ascii_whitespace() || b"/\\\"':".contains(&c));
    let mut at = end;
    while b.get(at) == Some(&b' ') && b.get(at + 1).is_some_and(|&c| name(c)) {
        at += 1;
        while b.get(at).is_some_and(|&c| name(c)) {
            at += 1;
        }
    }
    if b.get(at) == Some(&b'\\') {
        at
    } else {
        end
    }
}

/// The Luhn checksum over the digits of `s` (separators ignored), 13-19 digits.
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    // Card numbers start with 2 to 6 (Mastercard, Amex, Diners, JCB, Visa,
    // Maestro, Discover, UnionPay); a millisecond timestamp starts with 1.
    if !(2..=6).contains(&digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN countries and the length of their IBANs (the SWIFT IBAN registry).
#[rustfmt::skip]
const IBAN_LENGTHS: [(&[u8; 2], usize); 89] = [
    (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20),
    (b"BE", 16), (b"BG", 22), (b"BH", 22), (b"BI", 27), (b"BR", 29), (b"BY", 28),
    (b"CH", 21), (b"CR", 22), (b"CY", 28), (b"CZ", 24), (b"DE", 22), (b"DJ", 27),
    (b"DK", 18), (b"DO", 28), (b"EE", 20), (b"EG", 29), (b"ES", 24), (b"FI", 18),
    (b"FK", 18), (b"FO", 18), (b"FR", 27), (b"GB", 22), (b"GE", 22), (b"GI", 23),
    (b"GL", 18), (b"GR", 27), (b"GT", 28), (b"HN", 28), (b"HR", 21), (b"HU", 28),
    (b"IE", 22), (b"IL", 23), (b"IQ", 23), (b"IS", 26), (b"IT", 27), (b"JO", 30),
    (b"KW", 30), (b"KZ", 20), (b"LB", 28), (b"LC", 32), (b"LI", 21), (b"LT", 20),
    (b"LU", 20), (b"LV", 21), (b"LY", 25), (b"MC", 27), (b"MD", 24), (b"ME", 22),
    (b"MK", 19), (b"MN", 20), (b"MR", 27), (b"MT", 31), (b"MU", 30), (b"NI", 28),
    (b"NL", 18), (b"NO", 15), (b"OM", 23), (b"PK", 24), (b"PL", 28), (b"PS", 29),
    (b"PT", 25), (b"QA", 29), (b"RO", 24), (b"RS", 22), (b"RU", 33), (b"SA", 24),
    (b"SC", 31), (b"SD", 18), (b"SE", 24), (b"SI", 19), (b"SK", 24), (b"SM", 27),
    (b"SO", 23), (b"ST", 25), (b"SV", 28), (b"TL", 23), (b"TN", 24), (b"TR", 26),
    (b"UA", 29), (b"VA", 22), (b"VG", 24), (b"XK", 20), (b"YE", 30),
];

/// An IBAN: its country's length, and the mod-97 check (move the first four
/// characters to the end, letters to numbers, A=10; the remainder by 97 must
/// be 1). Written in one case, upper or lower (`de89 3704 ...` in a form).
pub fn iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    let lower = compact.iter().any(u8::is_ascii_lowercase);
    if lower && compact.iter().any(u8::is_ascii_uppercase) {
        return false;
    }
    let compact = compact.to_ascii_uppercase();
    let country = IBAN_LENGTHS
        .iter()
        .find(|(code, _)| compact.starts_with(*code));
    if country.is_none_or(|(_, len)| *len != compact.len()) {
        return false;
    }
    let rotated = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for &b in rotated {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_cards_and_rejects_lookalikes() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("1234567812345678"));
        assert!(!luhn("0000000000000000"), "all one digit");
        assert!(!luhn("411111111111"), "too short");
    }

    #[test]
    fn iban_mod_97() {
        assert!(iban("DE89370400440532013000"));
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban("DE89370400440532013001"));
        assert!(!iban("XX00"));
        // One case or the other; a mixed-case token is no IBAN.
        assert!(iban("de89370400440532013000"));
        assert!(iban("gb82 west 1234 5698 7654 32"));
        assert!(!iban("De89370400440532013000"));
        // The check passes, but not the country's length, or no country.
        assert!(!iban("DE6537040044053201300012"));
        assert!(!iban("AB28370400440532013000"));
        assert!(iban("NO9386011117947"), "the shortest, 15");
    }

    #[test]
    fn zero_padded_ipv4_is_an_address() {
        assert!(ipv4("010.000.000.001"));
        assert!(ipv4("192.168.001.010"));
        assert!(ipv4("8.8.8.8"));
        assert!(!ipv4("256.1.1.1"));
        assert!(!ipv4("0001.1.1.1"));
        assert!(!ipv4("1.1.1"));
        assert!(!ipv4("1.1.1.1.1"));
        assert!(!ipv4("1..1.1"));
    }

    #[test]
    fn ipv6_candidates_need_boundaries_and_must_parse() {
        let ok = |s: &str| validate(Validator::Ipv6, s, 0, s.len()).is_some();
        assert!(ok("2001:db8::1"));
        assert!(ok("fe80::1ff:fe23:4567:890a"));
        assert!(ok("2001:0db8:85a3:0000:0000:8a2e:0370:7334"));
        assert!(!ok("12:30:45"));
        assert!(!ok("00:1a:2b:3c:4d:5e"));
        let text = "std::vector";
        assert!(
            validate(Validator::Ipv6, text, 2, 5).is_none(),
            "d:: inside a word"
        );
    }

    #[test]
    fn ssn_rules_out_impossible_numbers() {
        let ok = |s: &str| validate(Validator::Ssn, s, 0, s.len()).is_some();
        assert!(ok("123-45-6789"));
        assert!(!ok("000-12-3456"));
        assert!(!ok("666-12-3456"));
        assert!(!ok("900-12-3456"));
        assert!(!ok("123-00-4567"));
        assert!(!ok("123-45-0000"));
    }

    #[test]
    fn keys_and_values_in_text() {
        let keys = regex::Regex::new(KEY_PATTERN).unwrap();
        let pairs = |s: &str| -> Vec<(String, String)> {
            keys.find_iter(s)
                .filter_map(|m| {
                    let key = key_in(m.as_str())?;
                    let value = value_after(s, m.end())?;
                    Some((m.as_str()[key].to_owned(), s[value].to_owned()))
                })
                .collect()
        };
        let one = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(pairs("token=abc"), one("token", "abc"));
        assert_eq!(
            pairs("\"password\": \"hunter2\""),
            one("password", "hunter2")
        );
        assert_eq!(
            pairs("Authorization: Bearer x"),
            one("Authorization", "Bearer x")
        );
        assert_eq!(pairs("auth: Bearer"), one("auth", "Bearer"));
        assert_eq!(pairs("k: \"a b, c\" d"), one("k", "a b, c"));
        assert_eq!(pairs("k: \"unclosed"), one("k", "unclosed"));
        assert_eq!(pairs("k => 'v w'"), one("k", "v w"));
        // A quote escaped inside a quoted value does not end it.
        assert_eq!(
            pairs(r#"{"password": "hun\"ter2", "n": 'it\'s'}"#),
            [one("password", r#"hun\"ter2"#), one("n", r"it\'s")].concat()
        );
        assert_eq!(pairs(r#"k: "ends\\" x"#), one("k", r"ends\\"));
        assert_eq!(pairs(r#"k: "trailing\"#), one("k", r"trailing\"));
        // PHP's var_dump: the key without its visibility, the value by its
        // length, the length with it.
        assert_eq!(
            pairs("[\"k\":protected]=>\n  string(4) \"a\"b \""),
            one("k", "string(4) \"a\"b \"")
        );
        assert_eq!(
            pairs("[\"k\":\"A\\B\":private]=>\n  int(12)"),
            one("k", "12")
        );
        assert_eq!(
            pairs("[\"k\"]=>\n  string(9) \"short\""),
            one("k", "string(9) \"short\"")
        );
        assert_eq!(
            pairs("[\"k\"]=>\n  string(9) \"cut"),
            one("k", "string(9) \"cut")
        );
        assert_eq!(pairs("[\"k\"]=> strings(2)"), one("k", "strings(2)"));
        assert_eq!(
            pairs("[\"k\"]=>\n  string(18446744073709551615) \"x\""),
            one("k", "string(18446744073709551615) \"x\"")
        );
        assert_eq!(pairs("k: [1, [2]], z"), one("k", "[1, [2]]"));
        assert_eq!(pairs("k: {\"a\""), one("k", "{\"a\""));
        assert_eq!(pairs("k: \"\""), vec![]);
        assert_eq!(pairs("'key' = 'v'"), one("key", "v"));
        assert_eq!(pairs("a=1&b=2"), [one("a", "1"), one("b", "2")].concat());
        // A pair right after another key is a pair of its own.
        assert_eq!(
            pairs("failed: password=hunter2"),
            [
                one("failed", "password=hunter2"),
                one("password", "hunter2")
            ]
            .concat()
        );
        assert_eq!(pairs("x= "), vec![]);
        // Keys are words of any script.
        assert_eq!(pairs("café=thé"), one("café", "thé"));
        assert_eq!(pairs("пароль: секрет"), one("пароль", "секрет"));
    }

    #[test]
    fn sensitive_keys() {
        let extra = ["order_secret".into(), "pin".into()];
        let one = KeyMatcher::new(&extra, true);
        let two = KeyMatcher::beside(&KeyMatcher::new(&[], true), &extra);
        let own = two.own.as_ref().expect("an automaton of their own");
        assert!(own.memory_usage() * 10 < one.automaton.memory_usage());
        for m in [one, two] {
            sensitive_keys_with(&m);
        }
    }

    fn sensitive_keys_with(m: &KeyMatcher) {
        for key in [
            "password",
            "PASSWORD",
            "user_password",
            "passwd",
            "pwd",
            "db-pwd",
            "secret",
            "client_secret",
            "api_key",
            "X-Api-Key",
            "apiKey",
            "access_token",
            "Authorization",
            "auth",
            "x-auth",
            "authKey",
            "credentials",
            "private_key",
            "token",
            "refresh_token",
            "session",
            "sessionid",
            "Cookie",
            "Set-Cookie",
            "csrf_token",
            "X-XSRF-TOKEN",
            "ssn",
            "user_ssn",
            "pin",
            // Other languages.
            "Passwort",
            "Paßwort",
            "neues_passwort",
            "Kennwort",
            "contraseña",
            "contrasena",
            "mot_de_passe",
            "motDePasse",
            "senha",
            "confirmar_senha",
            "wachtwoord",
            "lösenord",
            "salasana",
            "adgangskode",
            "passord",
            // Form, config and header names (not built of the words above).
            "psw",
            "pswd",
            "pword",
            "db_creds",
            "awsCreds",
            "$dbpass",
            "DBPASS",
            "dbpwd",
            "userpass",
            "rootpw",
            "SSHPASS",
            "cardCode",
            "totp_code",
            "totp",
            "mfa_code",
            "verification_code",
            "AIRFLOW__CORE__FERNET_KEY",
            "NEW_RELIC_LICENSE_KEY",
            "MAILGUN_KEY",
            "OPENAI_KEY",
            "aes_key",
            "jwt_key",
            "license_key",
            "DD-APPLICATION-KEY",
            "X-Honeycomb-Team",
            "X-License-Key",
            "jelszó",
            "hasło",
            "haslo",
            "heslo",
            "parola",
            "user_parola",
            "şifre",
            "sifre",
            "mật khẩu",
            "Mật_khẩu",
            "mat_khau",
            "matKhau",
            "kata_sandi",
            "kataSandi",
            "סיסמה",
            "סיסמא",
            "पासवर्ड",
            "รหัสผ่าน",
            "clave",
            "mdp",
            "пароль",
            "Пароль",
            "密码",
            "密碼",
            "パスワード",
            "비밀번호",
        ] {
            assert!(m.is_sensitive(key), "{key}");
        }
        for key in [
            "author",
            "authors",
            "username",
            "message",
            "email_count",
            "lineno",
            "filename",
            "ssnake",
            "token_type",
            "hasLocation",
            "parolaio",
            "clavicle",
            "mdpi_density",
            "classifier",
            "passorder_id",
            "bypass_cache",
            "compass",
            "upswing",
            "cache_key",
            "primary_key",
            "partition_key",
            "Idempotency-Key",
            "KEY",
            "verification_code_sent_at",
            "totp_enabled",
            "2fa_enabled",
        ] {
            assert!(!m.is_sensitive(key), "{key}");
        }
        assert_eq!(m.classify("input_tokens"), Sensitivity::Counts);
        assert!(m.mentions("login with password=x"));
        assert!(!m.mentions("nothing to see"));
        let only_configured = KeyMatcher::new(&["order_secret".into()], false);
        assert!(only_configured.is_sensitive("order_secret"));
        assert!(!only_configured.is_sensitive("password"));
        assert!(KeyMatcher::is_ip_field("REMOTE_ADDR"));
        assert!(KeyMatcher::is_ip_field("X-Forwarded-For"));
        assert!(!KeyMatcher::is_ip_field("address"));
    }
}
