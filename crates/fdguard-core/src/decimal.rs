//! A number as decimal text without allocating (for what fdguard writes from a signal handler
//! or a fork child: a pid in a path, a signal's number in a message).

/// The decimal digits of a number, on the stack.
#[derive(Clone, Copy)]
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn of(mut n: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits() {
        assert_eq!(Decimal::of(0).as_bytes(), b"0");
        assert_eq!(Decimal::of(4242).as_bytes(), b"4242");
        assert_eq!(Decimal::of(u64::MAX).as_bytes(), b"18446744073709551615");
    }
}
