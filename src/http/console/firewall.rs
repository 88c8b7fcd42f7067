//! The email firewall screen (LWS's Email Firewall): the mailboxes and domains with rules and
//! a field to open any mailbox of the principal's reach; per mailbox its ordered, numbered
//! rules with Up, Down and Delete, "Add a rule", the default action, and a box that tests an
//! address against the rules with the very check `allow` makes. Every mailbox named in a URL
//! goes through `Principal::mailbox_key`, as the API's routes do, so a `domain:` token reaches
//! its own domain's mailboxes by no spelling of another's.

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Change, Console, ConsoleError, PREFIX, Screen, blocking, column_heads, csrf_field, path_segment};
use crate::firewall::{Action, AsnSpec, KeyedRuleSet, Outcome, RuleSetOrigin, RuleSpec};
use crate::network::parse_ip;
use crate::warden::{FirewallCheck, FirewallError, RuleMove};
use crate::wire::Protocol;

/// The longest value a rule form or the test box takes (a list of countries or AS numbers).
const MAX_VALUE_LEN: usize = 1000;
/// The protocols the test box offers, as Dovecot names them.
const PROTOCOLS: [&str; 4] = ["imap", "pop3", "submission", "sieve"];

/// The key of the mailbox a URL names, if the principal may see it.
fn mailbox(console: &Console, login: &str) -> Result<String, ConsoleError> {
    console.require(Screen::Firewall.reach())?;
    Ok(console.principal.mailbox_key(login)?)
}

fn mailbox_path(key: &str) -> String {
    format!("{PREFIX}/firewall/{}", path_segment(key))
}

#[derive(Deserialize)]
pub struct OpenQuery {
    mailbox: Option<String>,
}

/// The list of mailboxes and domains with rules; `?mailbox=` opens one.
pub async fn list(console: Console, query: web::Query<OpenQuery>) -> Result<HttpResponse, ConsoleError> {
    console.require(Screen::Firewall.reach())?;
    if let Some(wanted) = query.mailbox.as_deref().filter(|m| !m.trim().is_empty()) {
        let key = mailbox(&console, wanted)?;
        return Ok(super::see_other(&mailbox_path(&key)));
    }
    let sets: Vec<_> =
        console.warden.rule_sets().into_iter().filter(|keyed| console.principal.sees_key(&keyed.key)).collect();
    let example = console.principal.domain().map_or("alice@example.com".to_string(), |d| format!("alice@{d}"));
    let body = html! {
        form.row method="get" action={ (PREFIX) "/firewall" } {
            label for="mailbox" { "Mailbox or domain"
                input #mailbox name="mailbox" maxlength="320" required placeholder=(example);
            }
            button type="submit" { "Open its rules" }
        }
        @if sets.is_empty() {
            p.muted { "No mailbox or domain has firewall rules yet. Open one above to add the first." }
        } @else {
            div.table-wrap {
                table #mailboxes {
                    (column_heads(&["Mailbox or domain", "Rules", "Default", "Set in", ""]))
                    tbody {
                        @for keyed in &sets {
                            tr {
                                td { (keyed.key) }
                                td { (keyed.rule_set.rules.len()) }
                                td { (keyed.rule_set.default.label()) }
                                td { (origin_text(keyed.origin)) }
                                td { a href=(mailbox_path(&keyed.key)) aria-label={ "Configure the rules of " (keyed.key) } { "Configure rules" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(console.page(Screen::Firewall, Screen::Firewall.title(), body))
}

fn origin_text(origin: RuleSetOrigin) -> &'static str {
    match origin {
        RuleSetOrigin::PolicyFile => "policy.toml",
        RuleSetOrigin::Api => "console or API",
    }
}

/// A rule's criterion in words, with the names the GeoIP data has for its address's facts.
fn criterion_text(spec: &RuleSpec) -> String {
    if let Some(address) = &spec.address {
        return format!("address {address}");
    }
    if let Some(network) = &spec.network {
        return format!("network {network}");
    }
    if let Some(countries) = &spec.country {
        return format!("country {}", countries.join(", "));
    }
    if let Some(asns) = &spec.asn {
        let numbers: Vec<String> = asns
            .iter()
            .map(|asn| match asn {
                AsnSpec::Number(n) => format!("AS{n}"),
                AsnSpec::Text(text) => text.clone(),
            })
            .collect();
        return format!("AS {}", numbers.join(", "));
    }
    "non-residential networks (hosting, VPN, proxy, Tor)".to_string()
}

#[derive(Deserialize)]
pub struct TrialQuery {
    ip: Option<String>,
    protocol: Option<String>,
}

/// One mailbox's rules; `?ip=` tests an address against them.
pub async fn mailbox_page(
    console: Console,
    login: web::Path<String>,
    query: web::Query<TrialQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let key = mailbox(&console, &login)?;
    let view = console.warden.mailbox_firewall(&key).map_err(|e| ConsoleError::Invalid(e.to_string()))?;
    let applied = view.applied.as_ref();
    let own_api = applied.is_some_and(|a| !a.via_domain && a.keyed.origin == RuleSetOrigin::Api);
    let editable = own_api || applied.is_none();
    let base = mailbox_path(&key);
    let trial = query.ip.as_deref().filter(|ip| !ip.trim().is_empty()).map(|ip| trial(&console, &key, ip, &query));
    let body = html! {
        p { a href={ (PREFIX) "/firewall" } { "All mailboxes" } }
        @match applied {
            None => p #applies { "No rules apply to " (key) ": every address is allowed. Add a rule to start." },
            Some(applied) => {
                p #applies {
                    @if applied.via_domain {
                        "The rules of " (applied.keyed.key) " apply to this mailbox. A change here gives " (key) " its own copy of them."
                    } @else if applied.keyed.origin == RuleSetOrigin::PolicyFile {
                        "These rules are set in policy.toml: change them in the file and reload. Adding a rule or setting the default here gives " (key) " its own copy, which replaces the file's until it is dropped."
                    } @else {
                        "These rules were set in the console or the API."
                    }
                    @if applied.keyed.rule_set.observe { " Observe mode: nothing is refused; the block log records what would be." }
                }
                (rules_table(&console, &base, &applied.keyed, editable && !applied.via_domain))
            }
        }
        h2 { "Test an address against these rules" }
        form.row #trial-form method="get" action=(base) {
            label for="ip" { "Address"
                input #ip name="ip" maxlength="64" required value=(query.ip.as_deref().unwrap_or_default());
            }
            label for="protocol" { "Protocol"
                select #protocol name="protocol" {
                    @for name in PROTOCOLS {
                        @if query.protocol.as_deref() == Some(name) { option selected { (name) } } @else { option { (name) } }
                    }
                }
            }
            button type="submit" { "Test" }
        }
        @if let Some(trial) = trial { (trial) }
        h2 { "Add a rule" }
        form.row #add-rule method="post" action={ (base) "/rules" } {
            (csrf_field(&console))
            label for="action" { "Action"
                select #action name="action" { option value="block" { "Block" } option value="allow" { "Allow" } }
            }
            label for="criterion" { "Matching"
                select #criterion name="criterion" {
                    option value="network" { "an IP address or range" }
                    option value="country" { "countries (FR, BE)" }
                    option value="asn" { "AS numbers (AS64500)" }
                    option value="non_residential" { "non-residential networks" }
                }
            }
            label for="value" { "Address, range, countries or AS numbers"
                input #value name="value" maxlength=(MAX_VALUE_LEN) placeholder="203.0.113.0/24";
            }
            label for="position" { "At number (empty: last)"
                input #position name="position" inputmode="numeric" maxlength="6" size="4";
            }
            button.primary type="submit" { "Add the rule" }
        }
        h2 { "Default action" }
        form.row #default-action method="post" action={ (base) "/default" } {
            (csrf_field(&console))
            label for="default" { "When no rule matches"
                select #default name="action" {
                    @let current = applied.map_or(Action::Allow, |a| a.keyed.rule_set.default);
                    @for action in [Action::Allow, Action::Block] {
                        @if action == current {
                            option value=(action.label()) selected { (action.label()) }
                        } @else {
                            option value=(action.label()) { (action.label()) }
                        }
                    }
                }
            }
            button type="submit" { "Set the default" }
        }
        @if own_api && applied.is_some_and(|a| a.keyed.origin == RuleSetOrigin::Api) {
            form.row method="post" action={ (base) "/reset" } data-confirm="Drop all of these rules?" {
                (csrf_field(&console))
                button.danger type="submit" { "Drop these rules (back to the policy file's, or none)" }
            }
        }
    };
    Ok(console.page(Screen::Firewall, &format!("Email firewall of {key}"), body))
}

fn rules_table(console: &Console, base: &str, keyed: &KeyedRuleSet, editable: bool) -> Markup {
    let rules = &keyed.rule_set.rules;
    html! {
        @if rules.is_empty() {
            p.muted { "No rules: the default action (" (keyed.rule_set.default.label()) ") decides." }
        } @else {
            div.table-wrap {
                table #rules {
                    thead { tr {
                        th scope="col" { "No." }
                        th scope="col" { "Action" }
                        th scope="col" { "Matching" }
                        @if editable { th scope="col" { "Change" } }
                    } }
                    tbody {
                        @for (index, rule) in rules.iter().enumerate() {
                            @let number = index + 1;
                            tr {
                                td.number { (number) }
                                td { (rule.action.label()) }
                                td { (criterion_text(&rule.spec())) }
                                @if editable {
                                    td.actions {
                                        @if number > 1 {
                                            form.inline method="post" action={ (base) "/rules/" (number) "/move" } {
                                                (csrf_field(console))
                                                input type="hidden" name="direction" value="up";
                                                button type="submit" aria-label={ "Move rule " (number) " up" } { "Up" }
                                            }
                                        }
                                        @if number < rules.len() {
                                            form.inline method="post" action={ (base) "/rules/" (number) "/move" } {
                                                (csrf_field(console))
                                                input type="hidden" name="direction" value="down";
                                                button type="submit" aria-label={ "Move rule " (number) " down" } { "Down" }
                                            }
                                        }
                                        form.inline method="post" action={ (base) "/rules/" (number) "/delete" } data-confirm={ "Delete rule " (number) "?" } {
                                            (csrf_field(console))
                                            button.danger type="submit" aria-label={ "Delete rule " (number) } { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Default: " (keyed.rule_set.default.label()) ". Protocols: " (keyed.rule_set.protocols.names().join(", ")) "." }
    }
}

/// The test box's answer: what `allow` would get from the firewall for a login to `key`.
fn trial(console: &Console, key: &str, ip: &str, query: &TrialQuery) -> Markup {
    let ip = match parse_ip(ip.trim()) {
        Ok(ip) => ip,
        Err(e) => return html! { p.flash.failure #trial role="alert" { (e.to_string()) } },
    };
    let protocol = Protocol::from_name(query.protocol.as_deref().unwrap_or("imap"));
    let (check, reply) = console.warden.firewall_trial(key, ip, protocol);
    let verdict = match &check {
        FirewallCheck::NoRules => "No rules apply: allowed.".to_string(),
        FirewallCheck::ProtocolNotCovered(_) => format!("The rules do not cover {}: allowed.", protocol.label()),
        FirewallCheck::Webmail(_) => "A webmail server: the firewall is for mail apps, allowed.".to_string(),
        FirewallCheck::NoAddress(_) => "No address: allowed.".to_string(),
        FirewallCheck::Evaluated { outcome, .. } => match outcome {
            Outcome::AllowedByRule(n) => format!("Allowed by rule no. {n}."),
            Outcome::BlockedByRule(n) => format!("Blocked by rule no. {n}."),
            Outcome::AllowedByDefault => "No rule matches: allowed by the default.".to_string(),
            Outcome::BlockedByDefault => "No rule matches: blocked by the default.".to_string(),
        },
    };
    let facts = match &check {
        FirewallCheck::Evaluated { facts, .. } => {
            let mut known = Vec::new();
            let (country_name, organisation) = console.warden.geoip_names(ip);
            match (facts.country, country_name) {
                (Some(code), Some(name)) => known.push(format!("country {code} ({name})")),
                (Some(code), None) => known.push(format!("country {code}")),
                (None, Some(name)) => known.push(format!("country {name}")),
                (None, None) => {}
            }
            match (facts.asn, organisation) {
                (Some(asn), Some(name)) => known.push(format!("AS{asn} ({name})")),
                (Some(asn), None) => known.push(format!("AS{asn}")),
                (None, Some(name)) => known.push(format!("AS of {name}")),
                (None, None) => {}
            }
            if facts.non_residential {
                known.push("non-residential".to_string());
            }
            known.join(", ")
        }
        _ => String::new(),
    };
    html! {
        div.card #trial role="status" {
            p #trial-verdict { strong { (ip) } ": " (verdict) }
            @if !facts.is_empty() { p.muted { "What the GeoIP data says: " (facts) "." } }
            @if let Some(reply) = reply {
                p { "The mail app would be told: " q #trial-message { (reply.msg) } }
            }
            @if check.observed() { p.muted { "Observe mode: the login would be allowed and recorded." } }
        }
    }
}

#[derive(Deserialize)]
pub struct NewRuleForm {
    action: String,
    criterion: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    position: String,
}

/// The items of a list typed in one field: separated by commas or spaces.
fn items(value: &str) -> Vec<String> {
    value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn rule_spec(form: &NewRuleForm) -> Result<RuleSpec, String> {
    let value = form.value.trim();
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("longer than {MAX_VALUE_LEN} characters"));
    }
    let mut spec = RuleSpec { action: form.action.clone(), ..RuleSpec::default() };
    match form.criterion.as_str() {
        "network" if value.contains('/') => spec.network = Some(value.to_string()),
        "network" => spec.address = Some(value.to_string()),
        "country" => spec.country = Some(items(value)),
        "asn" => spec.asn = Some(items(value).into_iter().map(AsnSpec::Text).collect()),
        "non_residential" => spec.non_residential = Some(true),
        other => return Err(format!("{other:?} is not a kind of rule")),
    }
    Ok(spec)
}

/// A change's outcome: back to the mailbox with what happened.
fn answer(console: &Console, key: &str, result: Result<(), FirewallError>, success: String) -> HttpResponse {
    match result {
        Ok(()) => console.done(true, success, &mailbox_path(key)),
        Err(e) => console.done(false, e.to_string(), &mailbox_path(key)),
    }
}

pub async fn add_rule(login: web::Path<String>, change: Change<NewRuleForm>) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    let key = mailbox(&console, &login)?;
    let position = match change.form.position.trim() {
        "" => None,
        text => match text.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return Ok(console.done(false, format!("{text:?} is not a rule number"), &mailbox_path(&key))),
        },
    };
    let rule = match rule_spec(&change.form).and_then(|spec| spec.parse().map_err(|e| e.to_string())) {
        Ok(rule) => rule,
        Err(message) => return Ok(console.done(false, message, &mailbox_path(&key))),
    };
    let (warden, principal, at) = (console.warden.clone(), console.principal.clone(), key.clone());
    let result = blocking(move || warden.add_rule(&at, rule, position, &principal).map(|_| ())).await?;
    Ok(answer(&console, &key, result, "The rule was added.".into()))
}

#[derive(Deserialize)]
pub struct MoveForm {
    direction: String,
}

pub async fn move_rule(
    path: web::Path<(String, usize)>,
    change: Change<MoveForm>,
) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    let (login, number) = path.into_inner();
    let key = mailbox(&console, &login)?;
    let movement = match change.form.direction.as_str() {
        "up" => RuleMove::Up,
        "down" => RuleMove::Down,
        other => return Err(ConsoleError::Invalid(format!("{other:?} is neither up nor down"))),
    };
    let (warden, principal, at) = (console.warden.clone(), console.principal.clone(), key.clone());
    let result = blocking(move || warden.move_rule(&at, number, movement, &principal).map(|_| ())).await?;
    Ok(answer(&console, &key, result, format!("Rule no. {number} moved {}.", change.form.direction)))
}

pub async fn delete_rule(
    path: web::Path<(String, usize)>,
    change: Change<super::IgnoredFields>,
) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    let (login, number) = path.into_inner();
    let key = mailbox(&console, &login)?;
    let (warden, principal, at) = (console.warden.clone(), console.principal.clone(), key.clone());
    let result = blocking(move || warden.delete_rule(&at, number, &principal).map(|_| ())).await?;
    Ok(answer(&console, &key, result, format!("Rule no. {number} was deleted.")))
}

#[derive(Deserialize)]
pub struct DefaultForm {
    action: String,
}

pub async fn set_default(login: web::Path<String>, change: Change<DefaultForm>) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    let key = mailbox(&console, &login)?;
    let Some(action) = Action::parse(&change.form.action) else {
        return Err(ConsoleError::Invalid(format!("{:?} is neither allow nor block", change.form.action)));
    };
    let (warden, principal, at) = (console.warden.clone(), console.principal.clone(), key.clone());
    let result = blocking(move || warden.set_default(&at, action, &principal).map(|_| ())).await?;
    Ok(answer(&console, &key, result, format!("The default is now {}.", action.label())))
}

pub async fn reset(
    login: web::Path<String>,
    change: Change<super::IgnoredFields>,
) -> Result<HttpResponse, ConsoleError> {
    let console = change.console;
    let key = mailbox(&console, &login)?;
    let (warden, principal, at) = (console.warden.clone(), console.principal.clone(), key.clone());
    let result = blocking(move || warden.reset_rule_set(&at, &principal)).await?;
    Ok(answer(&console, &key, result, "The console's and API's rules were dropped.".into()))
}
