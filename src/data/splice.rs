//! Zero-copy relay for Linux: socket → pipe → socket with splice(2), so the payload never
//! enters user space.
//!
//! Each direction gets its own pipe, made when its source first turns readable (the way back
//! of a transfer usually never does before the relay ends, and costs no pipe), and grown to
//! [`PIPE_SIZE`] with `F_SETPIPE_SZ`. Growing is refused to unprivileged users past
//! `/proc/sys/fs/pipe-user-pages-soft`; the pipe then keeps the size the kernel gave it,
//! which works, with more system calls per byte.
//!
//! The loop alternates: with the pipe empty, wait for the source and splice what it has into
//! the pipe; with bytes in the pipe, wait for the destination and splice them out, counting
//! each chunk as it is delivered. Filling only an empty pipe keeps `EAGAIN` unambiguous (a
//! pipe with bytes in it can also be full, and `EAGAIN` would then clear the source's
//! readiness while it still has data), so clearing tokio's readiness through `try_io` is
//! always right. On end of file the pipe is drained and the destination half-closed, as the
//! buffered pump does.

use super::relay::pump::{Dir, Phase};
use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// The capacity asked of each pipe when it is made. Measured on loopback
/// (`relay::tests::loopback_throughput`, 2 GiB, 2 vCPUs), the relay's CPU time was 0.9-1.0 s
/// buffered, the same with an 8 KiB pipe, 0.55-0.6 s with 64 KiB, 0.5 s with 256 KiB and
/// 0.4-0.45 s with 512 KiB or 1 MiB. Every pipe's capacity counts against its user's
/// pipe-user-pages-soft (64 MiB by default), past which an unprivileged user's new pipes get
/// 8 KiB: 256 KiB pipes let 256 transfers run at once before that, 1 MiB pipes only 64.
pub(crate) const PIPE_SIZE: usize = 256 * 1024;

/// What a pipe grows to while its source keeps filling it ([`Pipe::grow`]): bulk transfers
/// get fewer, larger splices (in the lab, 256 MiB RETR through REDIRECT: 13,200 splice calls
/// per GiB with 256 KiB, 3,400 with 1 MiB, and 12-17 % less CPU per GiB), while a listing or
/// a small file, which never fills its pipe, keeps its share of pipe-user-pages-soft small.
pub(crate) const PIPE_MAX: usize = 1024 * 1024;

/// Makes the pipe of one direction.
pub(crate) type OpenPipe = fn() -> io::Result<Pipe>;

/// A pipe, both ends non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes the pipe holds when full (as the kernel reports it).
    capacity: usize,
    /// What [`Pipe::grow_after`] may take it to.
    ceiling: usize,
}

static GROW_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

impl Pipe {
    /// A pipe of [`PIPE_SIZE`], or of the kernel's size when growing it is refused.
    pub(crate) fn open() -> io::Result<Self> {
        Self::sized(PIPE_SIZE, PIPE_MAX)
    }

    /// A pipe of `size` that stays so (the tests' and the loopback measurement's).
    #[cfg(test)]
    pub(crate) fn with_size(size: usize) -> io::Result<Self> {
        Self::sized(size, size)
    }

    /// A pipe of `size` that may grow to `max`.
    fn sized(size: usize, max: usize) -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        let capacity = match fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(want)) {
            Ok(n) => n,
            Err(e) => {
                let kept = fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)?;
                if !GROW_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        reason = %e,
                        wanted = size,
                        kept,
                        "cannot grow splice pipes (see /proc/sys/fs/pipe-user-pages-soft); keeping the kernel's size"
                    );
                }
                kept
            }
        };
        let capacity = usize::try_from(capacity).unwrap_or(0).max(1);
        // A pipe the kernel would not grow to its first size is not grown later either.
        let ceiling = if capacity >= size { max.max(capacity) } else { capacity };
        Ok(Self { read, write, capacity, ceiling })
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Doubles the pipe, up to [`PIPE_MAX`], after a fill that took at least half of it: the
    /// source has more queued than the pipe holds, and a larger pipe moves it in fewer calls.
    /// A refusal (pipe-user-pages-soft reached, or /proc/sys/fs/pipe-max-size lower) keeps the
    /// pipe as it is, and it is not asked again.
    fn grow_after(&mut self, filled: usize) {
        if self.capacity >= self.ceiling || filled.saturating_mul(2) < self.capacity {
            return;
        }
        let want = (self.capacity * 2).min(self.ceiling);
        match fcntl(self.write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(libc::c_int::try_from(want).unwrap_or(0))) {
            Ok(n) => self.capacity = usize::try_from(n).unwrap_or(self.capacity).max(self.capacity),
            Err(_) => self.ceiling = self.capacity,
        }
    }
}

/// How a spliced direction ended without an error.
#[derive(Debug)]
pub(crate) enum Ended {
    /// End of file delivered and the destination half-closed.
    Done,
    /// splice is not available here (the reason); nothing was moved, the caller may go on
    /// with a buffer.
    Refused(io::Error),
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Errors of a first splice that mean "not on this system or these descriptors" rather than
/// "this connection failed": a kernel or sandbox without splice, a filter answering EPERM.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPERM | Errno::EACCES)
    )
}

fn fill(src: &TcpStream, pipe: &Pipe) -> io::Result<usize> {
    Ok(splice(src, None, &pipe.write, None, pipe.capacity, flags())?)
}

fn drain(pipe: &Pipe, dst: &TcpStream, len: usize) -> io::Result<usize> {
    Ok(splice(&pipe.read, None, dst, None, len, flags())?)
}

/// Moves `r`'s bytes to `w` until end of file, then half-closes `w`. With `fallback`, a pipe
/// that cannot be made or a first splice that is refused ends with [`Ended::Refused`] before
/// a byte has moved; without, both are errors.
pub(crate) async fn pump(
    r: &ReadHalf<'_>,
    w: &mut WriteHalf<'_>,
    dir: &Dir<'_>,
    open: OpenPipe,
    fallback: bool,
) -> io::Result<Ended> {
    let src: &TcpStream = r.as_ref();
    dir.phase(Phase::Reading);
    src.readable().await?;
    let mut pipe = match open() {
        Ok(p) => p,
        Err(e) if fallback => return Ok(Ended::Refused(e)),
        Err(e) => return Err(e),
    };
    // Bytes in the pipe, taken from the source and not yet delivered.
    let mut queued = 0usize;
    let mut moved = false;
    let mut eof = false;
    loop {
        if queued == 0 {
            if eof {
                dir.phase(Phase::Closing);
                w.shutdown().await?;
                return Ok(Ended::Done);
            }
            dir.phase(Phase::Reading);
            src.readable().await?;
            match src.try_io(Interest::READABLE, || fill(src, &pipe)) {
                Ok(0) => eof = true,
                Ok(n) => {
                    queued = n;
                    moved = true;
                    dir.received();
                    pipe.grow_after(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) if fallback && !moved && refused(&e) => return Ok(Ended::Refused(e)),
                Err(e) => return Err(e),
            }
        } else {
            dir.phase(Phase::Writing);
            let dst: &TcpStream = w.as_ref();
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || drain(&pipe, dst, queued)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    queued -= n;
                    dir.delivered(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::relay::tests::pair;
    use crate::data::relay::{relay_with, Mode};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two descriptors that are not a pipe: splice refuses them with EINVAL.
    fn not_a_pipe() -> io::Result<Pipe> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok(Pipe { read: a.into(), write: b.into(), capacity: 65536, ceiling: 65536 })
    }

    fn no_pipe() -> io::Result<Pipe> {
        Err(Errno::EMFILE.into())
    }

    /// Relays `len` bytes from `a`'s peer to `b`'s peer in `mode`; returns the outcome and
    /// whether the receiver got exactly the bytes sent.
    async fn download(mode: Mode, len: usize) -> (crate::data::RelayOutcome, bool) {
        let (mut server, proxy_s) = pair().await;
        let (proxy_c, mut client) = pair().await;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let _ = server.write_all(&sent).await;
            let _ = server.shutdown().await;
            server
        });
        let relay =
            tokio::spawn(
                async move { relay_with(proxy_s, proxy_c, Duration::from_secs(10), &|_| {}, &|_| {}, mode).await },
            );
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        let out = relay.await.unwrap();
        drop(writer.await.unwrap());
        (out, got == data)
    }

    #[test]
    fn pipes_are_grown_and_report_their_capacity() {
        let p = Pipe::open().unwrap();
        // Unprivileged past pipe-user-pages-soft the kernel may keep a smaller pipe.
        assert!(p.capacity() >= 4096, "{}", p.capacity());
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap().trim().parse().unwrap();
        if PIPE_SIZE <= max && nix::unistd::Uid::effective().is_root() {
            assert_eq!(p.capacity(), PIPE_SIZE);
        }
        assert_eq!(Pipe::with_size(4096).unwrap().capacity(), 4096);
    }

    #[test]
    fn a_pipe_its_source_fills_grows_to_the_ceiling_and_no_further() {
        let mut p = Pipe::open().unwrap();
        let first = p.capacity();
        p.grow_after(first / 4);
        assert_eq!(p.capacity(), first, "a fill of a quarter leaves the pipe as it is");
        for _ in 0..8 {
            let full = p.capacity();
            p.grow_after(full);
        }
        assert!(p.capacity() <= PIPE_MAX.max(first), "{}", p.capacity());
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap().trim().parse().unwrap();
        if first == PIPE_SIZE && PIPE_MAX <= max && nix::unistd::Uid::effective().is_root() {
            assert_eq!(p.capacity(), PIPE_MAX);
        }
        // A fixed size stays fixed.
        let mut fixed = Pipe::with_size(4096).unwrap();
        fixed.grow_after(4096);
        assert_eq!(fixed.capacity(), 4096);
    }

    #[test]
    fn a_refused_size_keeps_the_kernels_pipe() {
        // Larger than any pipe can be: F_SETPIPE_SZ fails, the pipe stays usable.
        let p = Pipe::with_size(usize::MAX).unwrap();
        assert!(p.capacity() >= 4096);
    }

    #[tokio::test]
    async fn an_unsized_pipe_and_a_one_page_pipe_still_relay_everything() {
        let modes = [
            Mode::Splice { open: || Pipe::with_size(usize::MAX), fallback: false },
            Mode::Splice { open: || Pipe::with_size(4096), fallback: false },
        ];
        for mode in modes {
            let (out, same) = download(mode, 5 << 20).await;
            assert_eq!(out.result, Ok(()), "{mode:?}");
            assert!(same, "{mode:?}");
            assert_eq!((out.a_to_b, out.b_to_a), (5 << 20, 0), "{mode:?}");
        }
    }

    #[tokio::test]
    async fn refused_splice_falls_back_to_the_buffer_before_a_byte_moves() {
        for open in [not_a_pipe as OpenPipe, no_pipe] {
            let (out, same) = download(Mode::Splice { open, fallback: true }, 3 << 20).await;
            assert_eq!(out.result, Ok(()));
            assert!(same);
            assert_eq!((out.a_to_b, out.b_to_a), (3 << 20, 0));
        }
    }

    #[tokio::test]
    async fn without_fallback_a_refused_splice_is_an_error() {
        let (out, _) = download(Mode::Splice { open: not_a_pipe, fallback: false }, 1000).await;
        assert!(out.result.as_ref().unwrap_err().contains("Invalid argument"), "{:?}", out.result);
        assert_eq!(out.a_to_b, 0);
        let (out, _) = download(Mode::Splice { open: no_pipe, fallback: false }, 1000).await;
        assert!(out.result.as_ref().unwrap_err().contains("Too many open files"), "{:?}", out.result);
    }

    #[test]
    fn only_not_supported_errors_allow_the_fallback() {
        for e in [Errno::EINVAL, Errno::ENOSYS, Errno::EOPNOTSUPP, Errno::EPERM] {
            assert!(refused(&e.into()), "{e}");
        }
        for e in [Errno::ECONNRESET, Errno::EPIPE, Errno::EAGAIN, Errno::ENOMEM] {
            assert!(!refused(&e.into()), "{e}");
        }
    }
}
