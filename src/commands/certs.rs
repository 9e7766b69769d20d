//! `detour certs`: a CA and a serving certificate for the webhook's Service.
//!
//! Layer: runtime wiring for the CLI over detour-serve's certificates.

use std::io::Write;

use detour_serve::certs;

use crate::cli::CertsArgs;

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `--out`.
pub fn run(args: &CertsArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let request = certs::CertRequest {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        dns: args.dns.clone(),
        ips: args.ip.clone(),
        days: args.days,
    };
    certs::write(&certs::generate(&request)?, &args.out)?;
    writeln!(
        out,
        "wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key for {1:?}",
        args.out.display(),
        request.dns_names()
    )?;
    Ok(0)
}
