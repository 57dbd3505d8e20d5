//! The full client × mode × family × operation matrix against every server, through every path:
//! the routed and kernel-helper baselines, and ftpgate in REDIRECT, TPROXY and reverse mode.

mod lab;

use lab::clients::run_matrix;
use lab::servers::ServerKind;
use lab::{gate, Lab, LabPath};

fn matrix(path: LabPath, server: ServerKind) {
    if !gate(&format!("matrix {}/{}", path.name(), server.name()), Some(server)) {
        return;
    }
    let mut lab = Lab::new(path);
    let tree = lab.start_server(server);
    lab.start_ftpgate(&[]);
    run_matrix(&lab, &tree, server);
    lab.finish();
}

macro_rules! matrix_tests {
    ($($name:ident: $path:ident, $server:ident;)*) => {
        $(#[test] fn $name() { matrix(LabPath::$path, ServerKind::$server); })*
    };
}

matrix_tests! {
    routed_vsftpd: Routed, Vsftpd;
    routed_proftpd: Routed, Proftpd;
    routed_pureftpd: Routed, PureFtpd;
    kernel_helper_vsftpd: KernelHelper, Vsftpd;
    kernel_helper_proftpd: KernelHelper, Proftpd;
    kernel_helper_pureftpd: KernelHelper, PureFtpd;
    redirect_vsftpd: Redirect, Vsftpd;
    redirect_proftpd: Redirect, Proftpd;
    redirect_pureftpd: Redirect, PureFtpd;
    tproxy_vsftpd: Tproxy, Vsftpd;
    tproxy_proftpd: Tproxy, Proftpd;
    tproxy_pureftpd: Tproxy, PureFtpd;
    reverse_vsftpd: Reverse, Vsftpd;
    reverse_proftpd: Reverse, Proftpd;
    reverse_pureftpd: Reverse, PureFtpd;
}
