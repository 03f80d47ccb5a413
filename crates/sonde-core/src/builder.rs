//! The setters every builder writes alike.

/// Writes the plain setters of a builder (an exporter's, a server's, a source's): each stores its argument in the field
/// of the same name and returns the builder, with the docs written above it. `name: Type;`
/// stores the value, `name: Some(Type);` stores `Some(value)` (a setting whose default is
/// resolved later), `name: Some(impl Into<Type>);` stores `Some(value.into())`, and
/// `name: impl Into<Type>;` stores `value.into()`. Setters that clamp or check their argument
/// are written by hand.
///
/// ```
/// struct Builder {
///     retries: u32,
///     region: Option<String>,
///     endpoint: Option<String>,
///     name: String,
/// }
/// impl Builder {
///     sonde_core::builder_setters! {
///         /// Attempts per request.
///         retries: u32;
///         /// The region (default: from the environment).
///         region: Some(String);
///         /// Another endpoint.
///         endpoint: Some(impl Into<String>);
///         /// The name it reports.
///         name: impl Into<String>;
///     }
/// }
/// let b = Builder { retries: 0, region: None, endpoint: None, name: String::new() }
///     .retries(3)
///     .region("eu-west-1".into())
///     .endpoint("http://127.0.0.1:4566")
///     .name("local");
/// assert_eq!((b.retries, b.region.as_deref()), (3, Some("eu-west-1")));
/// assert_eq!(b.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
/// assert_eq!(b.name, "local");
/// ```
#[macro_export]
macro_rules! builder_setters {
    () => {};
    ($(#[$doc:meta])* $name:ident: Some(impl Into<$ty:ty>); $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: impl Into<$ty>) -> Self {
            self.$name = Some($name.into());
            self
        }
        $crate::builder_setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident: Some($ty:ty); $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = Some($name);
            self
        }
        $crate::builder_setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident: impl Into<$ty:ty>; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: impl Into<$ty>) -> Self {
            self.$name = $name.into();
            self
        }
        $crate::builder_setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident: $ty:ty; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
        $crate::builder_setters!($($rest)*);
    };
}
