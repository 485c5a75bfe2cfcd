//! Where a call goes, resolved once at the top of the stack.

use std::fmt;
use std::sync::Arc;

use crate::Origin;

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
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    origin: Origin,
    route: Option<Arc<str>>,
}

impl Target {
    /// A target at `origin`, with no known route.
    pub fn new(origin: Origin) -> Self {
        Target {
            origin,
            route: None,
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
            .finish()
    }
}
