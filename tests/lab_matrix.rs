//! The full client × mode × family × operation matrix against every server, through every path:
//! the routed and kernel-helper baselines, and ftpgate in REDIRECT, TPROXY and reverse mode, on
//! both data paths: relayed by ftpgate (or as FTPGATE_LAB_DATA_PATH says), and forwarded by the
//! kernel through ftpgate's pinholes (the kernel-path cases below, every server through every
//! interception mode; about 12 s each).

mod lab;

use lab::clients::run_matrix;
use lab::servers::ServerKind;
use lab::{gate, DataPath, Lab, LabPath};

fn matrix(path: LabPath, server: ServerKind) {
    matrix_on(path, server, DataPath::from_env());
}

fn matrix_on(path: LabPath, server: ServerKind, data_path: DataPath) {
    if !gate(&format!("matrix {}/{}/{}", path.name(), server.name(), data_path.name()), Some(server)) {
        return;
    }
    let mut lab = Lab::new(path);
    lab.data_path = data_path;
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

macro_rules! kernel_path_tests {
    ($($name:ident: $path:ident, $server:ident;)*) => {
        $(#[test] fn $name() { matrix_on(LabPath::$path, ServerKind::$server, DataPath::Kernel); })*
    };
}

kernel_path_tests! {
    kernel_path_redirect_vsftpd: Redirect, Vsftpd;
    kernel_path_redirect_proftpd: Redirect, Proftpd;
    kernel_path_tproxy_vsftpd: Tproxy, Vsftpd;
    kernel_path_tproxy_proftpd: Tproxy, Proftpd;
    kernel_path_reverse_vsftpd: Reverse, Vsftpd;
    kernel_path_reverse_proftpd: Reverse, Proftpd;
    kernel_path_redirect_pureftpd: Redirect, PureFtpd;
    kernel_path_tproxy_pureftpd: Tproxy, PureFtpd;
    kernel_path_reverse_pureftpd: Reverse, PureFtpd;
}
