//! What the admin API reads of a session and how an administrator ends one; transfers cut
//! short by ABOR or the session's end are noted for the transfer log.

use super::tests::{closed, replies, sa, v4, T};
use super::*;

fn aborted(a: &[Action]) -> Vec<&TransferInfo> {
    a.iter()
        .filter_map(|x| match x {
            Action::Note(Note::TransferAborted { transfer, .. }) => Some(transfer),
            _ => None,
        })
        .collect()
}

/// A passive RETR of `f` under way: its 150 relayed, the data channel open.
fn retr_running() -> (T, DataId) {
    let mut t = v4();
    let id = t.passive();
    t.client("TYPE I");
    t.server("200 binary");
    t.client("RETR f");
    t.server("150 here it comes");
    (t, id)
}

#[test]
fn an_admin_close_aborts_the_transfer_and_tells_the_client_421() {
    let (mut t, id) = retr_running();
    assert_eq!(t.core.phase(), PhaseName::Transfer);
    assert_eq!(t.core.transfer().map(|x| (x.verb.as_str(), x.path.as_str(), x.binary)), Some(("RETR", "f", true)));
    t.core.handle_admin_close(t.now);
    let a = t.actions();
    let noted = aborted(&a);
    assert_eq!(noted.len(), 1, "{a:?}");
    assert_eq!((noted[0].verb.as_str(), noted[0].path.as_str()), ("RETR", "f"));
    let note_at = a.iter().position(|x| matches!(x, Action::Note(Note::TransferAborted { .. }))).unwrap();
    assert_eq!(a.get(note_at + 1), Some(&Action::DropData(id)), "the note comes before the drop: {a:?}");
    assert_eq!(replies(&a), vec!["421 Session ended by the administrator\r\n"]);
    assert_eq!(a.last(), Some(&Action::Close(Outcome::AdminClosed)));
    assert_eq!(t.core.phase(), PhaseName::Closed);
    t.core.handle_admin_close(t.now);
    assert!(t.actions().is_empty(), "a closed session ignores a second close");
}

#[test]
fn an_admin_close_of_an_idle_session_notes_no_transfer() {
    let mut t = v4();
    t.core.handle_admin_close(t.now);
    let a = t.actions();
    assert!(aborted(&a).is_empty() && closed(&a), "{a:?}");
    assert_eq!(replies(&a), vec!["421 Session ended by the administrator\r\n"]);
}

#[test]
fn an_admin_close_before_the_greeting_closes_too() {
    let mut t = T::ungreeted("203.0.113.2:40000", "198.51.100.2:21", SessionPolicy::default());
    assert_eq!(t.core.phase(), PhaseName::Greeting);
    t.core.handle_admin_close(t.now);
    assert_eq!(t.actions().last(), Some(&Action::Close(Outcome::AdminClosed)));
}

#[test]
fn abor_notes_the_transfer_it_ends() {
    let (mut t, _) = retr_running();
    let a = t.client("ABOR");
    assert_eq!(aborted(&a).iter().map(|x| x.verb.as_str()).collect::<Vec<_>>(), ["RETR"], "{a:?}");
    assert_eq!(t.core.phase(), PhaseName::Aborting);
    assert!(t.core.transfer().is_none());
}

#[test]
fn a_finished_transfer_is_not_noted_as_aborted() {
    let (mut t, id) = retr_running();
    let a = t.finished(id);
    assert!(aborted(&a).is_empty(), "{a:?}");
    t.server("226 done");
    assert_eq!(t.core.phase(), PhaseName::Ready);
    let a = t.client("QUIT");
    assert!(aborted(&a).is_empty());
}

#[test]
fn phases_follow_the_session() {
    let mut t = v4();
    assert_eq!(t.core.phase(), PhaseName::Ready);
    t.client("PASV");
    t.server("227 (198,51,100,2,200,1)");
    assert_eq!(t.core.phase(), PhaseName::DataSetup);
    t.ready(DataReady::Listening(sa("198.51.100.2:50000")));
    assert_eq!(t.core.phase(), PhaseName::Ready, "a channel without a transfer command is not a transfer");
    t.client("LIST");
    assert_eq!(t.core.phase(), PhaseName::Transfer);
    assert_eq!(PhaseName::DataSetup.label(), "data_setup");
}
