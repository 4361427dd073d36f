//! A hint to the CPU to start loading memory a loop will read on its next turn.
//!
//! A room broadcast walks its members' state, one object per member that is not in the cache
//! when a message comes (thousands of sockets' worth touched once per message); each first
//! read stalls the sender. Asking for the next member's lines while this member's write runs
//! (a system call of a few microseconds) hides that wait.

/// Starts loading the cache lines of `bytes` bytes at `at` into every cache level. A hint:
/// nothing is read, any address is fine, and where there is no such instruction it does
/// nothing.
#[inline(always)]
pub fn lines<T>(at: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let at = at.cast::<i8>();
        for offset in (0..bytes).step_by(64) {
            // SAFETY: a prefetch does not access memory as far as the program is concerned:
            // it neither faults nor reads into anything the program sees, for any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, bytes);
}

#[cfg(test)]
mod tests {
    /// The SAFETY claim above: a prefetch of an address that is not mapped (null, a freed
    /// allocation, the top of the address space) does not fault.
    #[test]
    fn a_prefetch_of_any_address_does_not_fault() {
        let freed = Box::into_raw(Box::new([0u64; 32]));
        drop(unsafe { Box::from_raw(freed) });
        super::lines(freed, 256);
        super::lines(std::ptr::null::<u8>(), 256);
        super::lines(usize::MAX as *const u8, 128);
    }
}
