//! The classic `Arith` service: `switchboard demo` serves and calls it, and
//! so do the arith examples. Field names `A` and `B` on the wire (and `Quo`,
//! `Rem`), as Go's net/rpc example has them, so callers in other languages
//! see the same shape.

use serde::{Deserialize, Serialize};
use switchboard::Status;

/// Two operands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Args {
    /// The first operand (`A` on the wire).
    #[serde(rename = "A")]
    pub a: i64,
    /// The second operand (`B` on the wire).
    #[serde(rename = "B")]
    pub b: i64,
}

/// A quotient and remainder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotient {
    /// `A / B` (`Quo` on the wire).
    #[serde(rename = "Quo")]
    pub quo: i64,
    /// `A % B` (`Rem` on the wire).
    #[serde(rename = "Rem")]
    pub rem: i64,
}

/// Multiplication and division of two `i64`s, as in Go's net/rpc example.
#[switchboard::service]
pub trait Arith {
    /// `A * B`.
    #[switchboard(idempotent)]
    async fn multiply(&self, args: Args) -> Result<i64, Status>;

    /// `A / B` and `A % B`; `InvalidArgument` when `B` is zero.
    #[switchboard(idempotent)]
    async fn divide(&self, args: Args) -> Result<Quotient, Status>;
}

/// The implementation.
pub struct Calculator;

impl Arith for Calculator {
    async fn multiply(&self, args: Args) -> Result<i64, Status> {
        args.a.checked_mul(args.b).ok_or_else(|| Status::out_of_range(format!("{} * {} overflows i64", args.a, args.b)))
    }

    async fn divide(&self, args: Args) -> Result<Quotient, Status> {
        if args.b == 0 {
            return Err(Status::invalid_argument("divide by zero"));
        }
        match (args.a.checked_div(args.b), args.a.checked_rem(args.b)) {
            (Some(quo), Some(rem)) => Ok(Quotient { quo, rem }),
            _ => Err(Status::out_of_range(format!("{} / {} overflows i64", args.a, args.b))),
        }
    }
}

/// Operands for the `i`th call of a load run: varied, so a reply meant for
/// another call cannot pass for the right one.
pub fn operands(i: u64) -> Args {
    Args { a: (i % 1009) as i64 + 1, b: (i % 997) as i64 + 2 }
}

/// Multiply the `i`th [`operands`] and check the product; `Err` says what
/// went wrong (the error code and message, or the wrong product).
pub async fn multiply_checked<C: switchboard::Channel>(arith: &ArithClient<C>, i: u64) -> Result<(), String> {
    let args = operands(i);
    match arith.multiply(args).await {
        Ok(p) if Some(p) == args.a.checked_mul(args.b) => Ok(()),
        Ok(p) => Err(format!("wrong answer: {} × {} came back as {p}", args.a, args.b)),
        Err(e) => Err(e.coded().to_string()),
    }
}
