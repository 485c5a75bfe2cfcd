//! Where a call goes, resolved once at the top of the stack.

use std::fmt;
use std::sync::Arc;

use crate::{Deadline, Origin};

/// Where a call goes: its origin and, when the API's description names it, the route
/// template of its path (`/contacts/{id}`), resolved once by the outermost step of a stack
/// (the engine's base-URL step) and carried in the request's extensions.
///
/// The layers below read it instead of working it out again: the rate-limit layer keys its
/// budgets on [`Target::origin`], the logging layer names the call by its
/// [`Target::route`] (never by the raw path, which holds ids). A layer used alone in
/// someone else's stack, where no `Target` is set, works from the request's absolute URI.
/// The auth layer checks the URI itself: whether a token may be sent must not depend on an
/// extension any layer could insert.
///
/// ```
/// use blueprint_core::{Origin, Target};
///
/// let mut request = http::Request::new(());
/// let target = Target::new(Origin::parse("https://api.intercom.io")?).with_route("/contacts/{id}");
/// request.extensions_mut().insert(target);
/// let target = Target::of(&request).expect("set above");
/// assert_eq!(target.origin().host(), "api.intercom.io");
/// assert_eq!(target.route(), Some("/contacts/{id}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It also carries the call's [`Deadline`] once a layer sets one ([`Deadline::tighten`]):
/// one extension for the whole call instead of one per fact. Two targets are equal when
/// they name the same place, whatever their deadlines.
#[derive(Clone)]
pub struct Target {
    origin: Origin,
    route: Option<Arc<str>>,
    deadline: Option<Deadline>,
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.route == other.route
    }
}

impl Eq for Target {}

impl Target {
    /// A target at `origin`, with no known route.
    pub fn new(origin: Origin) -> Self {
        Target {
            origin,
            route: None,
            deadline: None,
        }
    }

    /// The same target, naming its route template (`/contacts/{id}`).
    #[must_use]
    pub fn with_route(mut self, route: impl Into<Arc<str>>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// The origin the request goes to.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The route template of the request's path, when the API's description names it.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The call's deadline, once a layer set it here ([`Deadline::tighten`]); read a
    /// request's with [`Deadline::of`], which also sees a caller's `Deadline` extension.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    pub(crate) fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }

    /// The target a request carries, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<&Target> {
        request.extensions().get::<Target>()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("origin", &self.origin)
            .field("route", &self.route)
            .field("deadline", &self.deadline)
            .finish()
    }
}
