//! `#[measured]`: function-level metrics in the spirit of autometrics. Use it through the
//! `sonde` facade (feature `macros`), which provides the runtime it expands to.
//!
//! Each call of a measured function counts in `function.calls{function, module, result}`
//! (`result` is `ok` or `error` for functions returning `Result`, `ok` otherwise) and records its
//! duration in `function.duration{function, module}` (seconds), in the global registry. The
//! handles are resolved once per function, so a call costs one counter increment, one histogram
//! record and two clock reads.
#![warn(missing_docs)]

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, ReturnType, Type, parse_macro_input};

/// Records calls, errors and duration of the function it is put on.
///
/// `#[measured]` expands to code using `::sonde::instrument::__private`; pass
/// `#[measured(crate = some::path)]` when `sonde_instrument` is reached by another path.
#[proc_macro_attribute]
pub fn measured(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut runtime: syn::Path = syn::parse_quote!(::sonde::instrument);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            runtime = meta.value()?.parse()?;
            Ok(())
        } else {
            Err(meta.error("unsupported #[measured] argument; the only one is `crate = path`"))
        }
    });
    parse_macro_input!(attr with parser);
    let mut f = parse_macro_input!(item as ItemFn);
    let name = f.sig.ident.to_string();
    let returns_result = match &f.sig.output {
        ReturnType::Type(_, ty) => is_result(ty),
        ReturnType::Default => false,
    };
    let body = &f.block;
    let outcome = if returns_result {
        quote! { __sonde_out.is_ok() }
    } else {
        quote! { true }
    };
    let run = if f.sig.asyncness.is_some() {
        quote! { async move #body.await }
    } else {
        // A closure keeps `return` and `?` inside the body meaning what they meant.
        quote! { (move || #body)() }
    };
    f.block = syn::parse_quote!({
        static __SONDE_FN: #runtime::__private::FnMetrics =
            #runtime::__private::FnMetrics::new(::core::module_path!(), #name);
        let __sonde_start = ::std::time::Instant::now();
        #[allow(clippy::redundant_closure_call)]
        let __sonde_out = #run;
        __SONDE_FN.record(__sonde_start, #outcome);
        __sonde_out
    });
    quote!(#f).into()
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Paren(p) => is_result(&p.elem),
        Type::Group(g) => is_result(&g.elem),
        _ => false,
    }
}
