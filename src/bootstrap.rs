//! Bootstrap tokens and the scripts that turn a host into a registered machine.
//!
//! A token is 32 random bytes, shown once to the admin inside a one-line command and stored
//! only as its SHA-256. It is good for a single key registration, for 24 hours or until the
//! machine expires, whichever is sooner.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{MachineId, VaultName};

/// How long a bootstrap token lasts at most.
pub const TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// A bootstrap token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRecord {
    pub vault: VaultName,
    pub machine_id: MachineId,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<DateTime<Utc>>,
}

impl BootstrapRecord {
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.used_at.is_none() && now < self.expires_at
    }
}

/// A freshly made token: the text to hand out and the key it is stored under.
#[derive(Debug)]
pub struct NewToken {
    pub token: String,
    pub key: Vec<u8>,
}

/// Makes a new random token.
pub fn new_token() -> NewToken {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    let token = URL_SAFE_NO_PAD.encode(raw.as_ref());
    let key = token_key(&token);
    NewToken { token, key }
}

/// The storage key of a token: its SHA-256. Tokens that are not of the issued form map to
/// no key at all, so they are never looked up.
pub fn token_key(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether text has the shape of an issued token (43 URL-safe base64 characters).
pub fn is_token_shaped(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The bootstrap URL and the command an admin runs on the host.
pub fn command(public_url: &str, vault: &VaultName, token: &str) -> (String, String) {
    let url = format!(
        "{}/v1/{vault}/temp-bootstrap/{token}",
        public_url.trim_end_matches('/')
    );
    let command = format!("curl -sSL {url} | sh");
    (url, command)
}

/// Quotes a value for a POSIX shell: single quotes, with embedded ones escaped.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The POSIX `sh` script served for a usable token.
pub fn sh_script(public_url: &str, vault: &VaultName, url: &str) -> String {
    SH_TEMPLATE
        .replace("@SERVER@", &sh_quote(public_url.trim_end_matches('/')))
        .replace("@VAULT@", &sh_quote(vault.as_str()))
        .replace("@URL@", &sh_quote(url))
}

/// The script served for a token that is unknown, used or expired: it explains and fails.
pub fn sh_error_script() -> &'static str {
    "#!/bin/sh\n\
     echo 'tempvault bootstrap: this bootstrap token is unknown, already used or expired.' >&2\n\
     echo 'Ask an admin to create the machine again for a fresh command.' >&2\n\
     exit 1\n"
}

const SH_TEMPLATE: &str = r#"#!/bin/sh
# tempvault bootstrap: makes this host a tempvault machine.
# The Ed25519 private key is generated here and never leaves this host; only the public key
# is sent to the server.
set -eu

TV_SERVER=@SERVER@
TV_VAULT=@VAULT@
TV_URL=@URL@
TV_HOME="${TEMPVAULT_HOME:-$HOME/.tempvault}"

fail() {
    echo "tempvault bootstrap: $*" >&2
    exit 1
}

command -v openssl >/dev/null 2>&1 || fail "openssl 1.1.1 or newer is required"
command -v curl >/dev/null 2>&1 || fail "curl is required"

umask 077
mkdir -p "$TV_HOME" || fail "cannot create $TV_HOME"
chmod 700 "$TV_HOME"
key="$TV_HOME/machine.key"
[ ! -e "$key" ] || fail "$key already exists; set TEMPVAULT_HOME to keep another identity"

tmp="$key.new.$$"
trap 'rm -f "$tmp"' EXIT
openssl genpkey -algorithm ed25519 -out "$tmp" 2>/dev/null \
    || fail "openssl cannot make an Ed25519 key; version 1.1.1 or newer is required"
chmod 600 "$tmp"
# The DER public key is a fixed 12-byte header followed by the 32 raw key bytes.
pub=$(openssl pkey -in "$tmp" -pubout -outform DER | tail -c 32 | openssl base64 -A)
[ "${#pub}" -eq 44 ] || fail "could not extract the public key"

resp=$(curl -sS -X POST -H 'Content-Type: application/json' \
    --data "{\"public_key\":\"$pub\"}" -w '\n%{http_code}' "$TV_URL") \
    || fail "cannot reach $TV_SERVER"
status=$(printf '%s\n' "$resp" | tail -n 1)
body=$(printf '%s\n' "$resp" | sed '$d')
if [ "$status" != "200" ]; then
    msg=$(printf '%s' "$body" | sed -n 's/.*"message":"\([^"]*\)".*/\1/p')
    fail "registration refused (HTTP $status): ${msg:-$body}"
fi
id=$(printf '%s' "$body" | sed -n 's/.*"machine_id":"\([0-9a-f-]*\)".*/\1/p')
[ -n "$id" ] || fail "the server's answer has no machine id"

mv "$tmp" "$key"
trap - EXIT
cat > "$TV_HOME/config" <<TVCONFIG
server=$TV_SERVER
vault=$TV_VAULT
machine_id=$id
key=$key
TVCONFIG
chmod 600 "$TV_HOME/config"
echo "tempvault bootstrap: registered; the machine is pending until an admin approves it" >&2
echo "$id"
"#;

/// Quotes a value for PowerShell: single quotes, with embedded ones doubled.
fn ps_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The PowerShell script served with `?os=windows`. It needs `openssl.exe` on the `PATH`
/// (Git for Windows ships one): .NET has no Ed25519 key generation of its own.
pub fn ps_script(public_url: &str, vault: &VaultName, url: &str) -> String {
    PS_TEMPLATE
        .replace("@SERVER@", &ps_quote(public_url.trim_end_matches('/')))
        .replace("@VAULT@", &ps_quote(vault.as_str()))
        .replace("@URL@", &ps_quote(url))
}

/// The PowerShell counterpart of [`sh_error_script`].
pub fn ps_error_script() -> &'static str {
    "Write-Error 'tempvault bootstrap: this bootstrap token is unknown, already used or expired. \
     Ask an admin to create the machine again for a fresh command.'\r\nexit 1\r\n"
}

const PS_TEMPLATE: &str = r#"# tempvault bootstrap for Windows: makes this host a tempvault machine.
# Run: iwr -useb '<url>?os=windows' | iex
# The Ed25519 private key is generated here and never leaves this host.
$ErrorActionPreference = 'Stop'
$TvServer = @SERVER@
$TvVault = @VAULT@
$TvUrl = @URL@
$TvHome = if ($env:TEMPVAULT_HOME) { $env:TEMPVAULT_HOME } else { Join-Path $HOME '.tempvault' }

function Fail($msg) { Write-Error "tempvault bootstrap: $msg"; exit 1 }

if (-not (Get-Command openssl -ErrorAction SilentlyContinue)) { Fail 'openssl 1.1.1 or newer is required on the PATH' }
New-Item -ItemType Directory -Force -Path $TvHome | Out-Null
$key = Join-Path $TvHome 'machine.key'
if (Test-Path $key) { Fail "$key already exists; set TEMPVAULT_HOME to keep another identity" }
$tmp = "$key.new"
& openssl genpkey -algorithm ed25519 -out $tmp 2>$null
if ($LASTEXITCODE -ne 0) { Fail 'openssl cannot make an Ed25519 key; version 1.1.1 or newer is required' }
& icacls $tmp /inheritance:r /grant:r "$($env:USERNAME):(R,W)" | Out-Null
$der = Join-Path $TvHome 'machine.pub.der'
& openssl pkey -in $tmp -pubout -outform DER -out $der
$bytes = [IO.File]::ReadAllBytes($der)
Remove-Item $der
$pub = [Convert]::ToBase64String($bytes[($bytes.Length - 32)..($bytes.Length - 1)])
try {
    $resp = Invoke-RestMethod -Method Post -Uri $TvUrl -ContentType 'application/json' -Body (@{ public_key = $pub } | ConvertTo-Json)
} catch {
    Remove-Item $tmp -ErrorAction SilentlyContinue
    Fail "registration refused: $($_.ErrorDetails.Message)"
}
Move-Item $tmp $key
@("server=$TvServer", "vault=$TvVault", "machine_id=$($resp.machine_id)", "key=$key") | Set-Content (Join-Path $TvHome 'config')
Write-Host 'tempvault bootstrap: registered; the machine is pending until an admin approves it'
Write-Output $resp.machine_id
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_token_shaped() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a.token, b.token);
        assert!(is_token_shaped(&a.token));
        assert_eq!(a.key, token_key(&a.token));
        assert!(!is_token_shaped("short"));
    }

    #[test]
    fn shell_values_are_single_quoted() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        let v = VaultName::parse("default").unwrap();
        let script = sh_script("http://h:1/", &v, "http://h:1/v1/default/temp-bootstrap/t");
        assert!(script.contains("TV_SERVER='http://h:1'\n"));
        assert!(script.contains("TV_VAULT='default'\n"));
    }
}
