//! What tandem accepts as a domain or resource name. The service checks every
//! argument from the bus with these before the core sees it; a client may check
//! first to fail without a round trip.

/// Longest domain name accepted, in bytes (libvirt and xl names are far shorter).
pub const MAX_DOMAIN_LEN: usize = 255;
/// Longest DRBD resource name accepted, in bytes (the configuration's limit).
pub const MAX_RESOURCE_LEN: usize = 128;
/// Most resources one hook call may name.
pub const MAX_RESOURCES: usize = 64;

/// Why an argument is not accepted. The message quotes at most the first 64
/// characters of the offending name, so a huge argument makes a short error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidArg {
    #[error("the domain name is empty")]
    EmptyDomain,
    #[error("the domain name is {0} bytes long; at most {MAX_DOMAIN_LEN} are accepted")]
    DomainTooLong(usize),
    #[error("the domain name {0} contains a control character")]
    DomainControlChar(String),
    #[error("a resource name is empty")]
    EmptyResource,
    #[error("the resource name {0} is not one tandem accepts: up to {MAX_RESOURCE_LEN} letters, digits, '_', '.' and '-', not starting with '-' or '.'")]
    BadResource(String),
    #[error("{0} resources named; at most {MAX_RESOURCES} are accepted")]
    TooManyResources(usize),
    #[error("the resource {0} is named twice")]
    DuplicateResource(String),
}

/// `name` quoted for an error message, cut to 64 characters.
fn shown(name: &str) -> String {
    const KEEP: usize = 64;
    match name.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{:?}...", &name[..cut]),
        None => format!("{name:?}"),
    }
}

/// A hypervisor domain name: not empty, at most [`MAX_DOMAIN_LEN`] bytes, no
/// control characters. Anything else is allowed (object paths escape it).
pub fn validate_domain(name: &str) -> Result<(), InvalidArg> {
    if name.is_empty() {
        return Err(InvalidArg::EmptyDomain);
    }
    if name.len() > MAX_DOMAIN_LEN {
        return Err(InvalidArg::DomainTooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidArg::DomainControlChar(shown(name)));
    }
    Ok(())
}

/// A DRBD resource name, by the rule the configuration applies to
/// `[drbd] resources` (so a name outside it can never be a managed resource).
pub fn validate_resource(name: &str) -> Result<(), InvalidArg> {
    if name.is_empty() {
        return Err(InvalidArg::EmptyResource);
    }
    let ok = name.len() <= MAX_RESOURCE_LEN
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidArg::BadResource(shown(name)))
    }
}

/// Every name valid, at most [`MAX_RESOURCES`], none twice.
pub fn validate_resources<S: AsRef<str>>(names: &[S]) -> Result<(), InvalidArg> {
    if names.len() > MAX_RESOURCES {
        return Err(InvalidArg::TooManyResources(names.len()));
    }
    for (i, n) in names.iter().enumerate() {
        let n = n.as_ref();
        validate_resource(n)?;
        if names[..i].iter().any(|m| m.as_ref() == n) {
            return Err(InvalidArg::DuplicateResource(shown(n)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(validate_domain("web-1.prod"), Ok(()));
        assert_eq!(validate_domain("ünïcode vm"), Ok(()));
        assert_eq!(validate_domain(""), Err(InvalidArg::EmptyDomain));
        assert_eq!(validate_domain(&"x".repeat(256)), Err(InvalidArg::DomainTooLong(256)));
        assert!(matches!(validate_domain("a\nb"), Err(InvalidArg::DomainControlChar(_))));
    }

    #[test]
    fn resources() {
        assert_eq!(validate_resources(&["r0", "data_1", "a.b-c"]), Ok(()));
        assert_eq!(validate_resources::<&str>(&[]), Ok(()));
        assert_eq!(validate_resources(&[""]), Err(InvalidArg::EmptyResource));
        for bad in ["-r", ".r", "r/0", "r 0", "r;0", "é"] {
            assert!(
                matches!(validate_resource(bad), Err(InvalidArg::BadResource(_))),
                "{bad}"
            );
        }
        assert_eq!(
            validate_resources(&["r0", "r1", "r0"]),
            Err(InvalidArg::DuplicateResource("\"r0\"".into()))
        );
        let many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
        assert_eq!(validate_resources(&many), Err(InvalidArg::TooManyResources(65)));
    }

    #[test]
    fn a_huge_name_makes_a_short_message() {
        let msg = validate_resource(&"%".repeat(1 << 20)).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }
}
