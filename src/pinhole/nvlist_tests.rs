//! The expected bytes are derived by hand from libnv's `nvlist_pack_header`,
//! `nvpair_pack_header`, `nvpair_pack_*`, `nvpair_pack_nvlist_up` and `nvlist_size`
//! (sys/contrib/libnv), on a little-endian host.

use super::*;

fn le64(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// `struct nvlist_header`: magic 'l', version 0, flags 0, descriptors 0, then `size`.
fn list_header(size: u64) -> Vec<u8> {
    let mut v = vec![0x6c, 0, 0];
    v.extend(le64(0));
    v.extend(le64(size));
    v
}

/// `struct nvpair_header` and the NUL-terminated name.
fn pair(ty: u8, name: &str, datasize: u64, nitems: u64) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend(((name.len() + 1) as u16).to_le_bytes());
    v.extend(le64(datasize));
    v.extend(le64(nitems));
    v.extend(name.as_bytes());
    v.push(0);
    v
}

#[test]
#[cfg(target_endian = "little")]
fn one_number_packs_as_libnv_does() {
    // 19 header + (19 pair header + "a\0" + 8 data) = 48 bytes; the header's size is 29.
    let mut want = list_header(29);
    want.extend(pair(3, "a", 8, 0));
    want.extend(le64(1));
    let got = NvList::new().num("a", 1).pack();
    assert_eq!(got, want);
    assert_eq!(got.len(), 48);
}

#[test]
#[cfg(target_endian = "little")]
fn strings_count_their_nul_and_arrays_their_items() {
    let mut want = list_header(0);
    want.extend(pair(4, "anchor", 4, 0));
    want.extend(b"ftp\0");
    want.extend(pair(9, "port", 16, 2));
    want.extend(le64(21));
    want.extend(le64(0));
    want.extend(pair(7, "key", 2, 0));
    want.extend([0xaa, 0xbb]);
    want.extend(pair(2, "kill_match", 1, 0));
    want.push(1);
    let size = (want.len() - 19) as u64;
    want[11..19].copy_from_slice(&size.to_le_bytes());
    let got = NvList::new()
        .string("anchor", "ftp")
        .with("port", Value::NumberArray(vec![21, 0]))
        .with("key", Value::Binary(vec![0xaa, 0xbb]))
        .with("kill_match", Value::Bool(true))
        .pack();
    assert_eq!(got, want);
}

#[test]
#[cfg(target_endian = "little")]
fn nested_lists_carry_the_rest_of_the_buffer_and_close_with_nvlist_up() {
    // {"l": {"n": true}}:
    //   top header (19) | pair NVLIST "l" (19 + 2), datasize = nvlist_size(child)
    //   = 19 + (19 + 2 + 1) = 41 | child header (19) | pair BOOL "n" (19 + 2) + 1 byte
    //   | NVLIST_UP pair (19 + "\0").
    // Total 101: the top header's size is 82, the child header's (at offset 40) 42: each
    // list header counts every byte after it in the whole buffer (nvlist_pack_header uses
    // what is left of the buffer).
    let mut want = list_header(82);
    want.extend(pair(5, "l", 41, 0));
    want.extend(list_header(42));
    want.extend(pair(2, "n", 1, 0));
    want.push(1);
    want.extend(pair(255, "", 0, 0));
    let got = NvList::new().list("l", NvList::new().with("n", Value::Bool(true))).pack();
    assert_eq!(got.len(), 101);
    assert_eq!(got, want);
}

#[test]
fn packed_lists_read_back() {
    let inner = NvList::new().num("states_tot", 3).with("packets", Value::NumberArray(vec![1, 2]));
    let l = NvList::new()
        .num("ticket", u32::MAX as u64)
        .string("anchor", "ftpgate/1.2")
        .list("rule", inner.clone().list("deeper", NvList::new().num("x", 7)))
        .num("after", 9);
    let back = NvList::unpack(&l.pack()).unwrap();
    assert_eq!(back, l);
    assert_eq!(back.get_list("rule").and_then(|r| r.get_number("states_tot")), Some(3));
    assert_eq!(back.get_number("after"), Some(9));
}

#[test]
fn setting_a_name_twice_replaces_it() {
    let l = NvList::new().num("a", 1).num("a", 2);
    assert_eq!(l.get_number("a"), Some(2));
    assert_eq!(names(&l).len(), 1);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let good = NvList::new().list("r", NvList::new().num("n", 1)).pack();
    for cut in 0..good.len() {
        assert!(NvList::unpack(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut bad_magic = good.clone();
    bad_magic[0] = 0x6d;
    assert!(NvList::unpack(&bad_magic).is_err());
    // An NVLIST_UP at the top level.
    let mut stray = list_header(20);
    stray.extend(pair(255, "", 0, 0));
    assert!(NvList::unpack(&stray).is_err());
    // A number whose size is not 8.
    let mut odd = list_header(0);
    odd.extend(pair(3, "n", 4, 0));
    odd.extend([1, 0, 0, 0]);
    let size = (odd.len() - 19) as u64;
    odd[11..19].copy_from_slice(&size.to_le_bytes());
    assert!(NvList::unpack(&odd).is_err());
}

#[test]
fn big_endian_answers_are_read_too() {
    // Flag 0x80: header and pair integers big-endian.
    let mut v = vec![0x6c, 0, 0x80];
    v.extend(0u64.to_be_bytes());
    v.extend(29u64.to_be_bytes());
    v.push(3);
    v.extend(2u16.to_be_bytes());
    v.extend(8u64.to_be_bytes());
    v.extend(0u64.to_be_bytes());
    v.extend(b"a\0");
    v.extend(5u64.to_be_bytes());
    assert_eq!(NvList::unpack(&v).unwrap().get_number("a"), Some(5));
}
