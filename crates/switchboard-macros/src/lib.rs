//! `#[switchboard::service]`: turn a trait into a served service and a typed
//! client.
//!
//! Given
//!
//! ```ignore
//! #[switchboard::service]
//! pub trait Arith {
//!     #[switchboard(idempotent)]
//!     async fn multiply(&self, args: Args) -> Result<i64, Status>;
//! }
//! ```
//!
//! the macro emits
//!
//! * the trait itself, with each `async fn` rewritten to return
//!   `impl Future<Output = ...> + Send` (so the server can run handlers on
//!   any worker thread) and `Send + Sync + 'static` as supertraits;
//!   implementors still write `async fn`;
//! * `ArithServer<T: Arith>`, a `switchboard::Service` dispatching the wire
//!   names (`Multiply`) to the trait methods, decoding and encoding in the
//!   caller's codec;
//! * `ArithClient<C: Channel = Client>`, with one async method per trait
//!   method calling `Arith.Multiply`.
//!
//! Wire names follow Go's net/rpc: the service is the trait name, methods are
//! the method names in PascalCase. Override them with
//! `#[switchboard::service(name = "...")]` and `#[switchboard(name = "...")]`.
//! A method is a safe, non-generic `async fn` without a default body; it
//! takes `&self` and at most one argument of a concrete type, and returns
//! `Result<T, E>` with `E: Into<switchboard::Status>`. Wire names are
//! unique within the service, non-empty, and a method's has no `.`.
//! Anything else is a compile error naming what to write instead, all of
//! them reported in one build; `tests/ui/` holds a compile-fail case for
//! each.

use proc_macro::TokenStream;
use proc_macro2::{Ident, Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Item, ItemTrait, LitStr, Meta, PathArguments, Receiver, ReturnType,
    Signature, Token, TraitItem, TraitItemFn, Type,
};

/// Generate a server dispatcher and a typed client for a trait. Use it as
/// `switchboard::service`, whose documentation says what it generates and
/// shows a nested call; this crate's docs have the rules a trait must
/// follow.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse::<Item>(item) {
        Ok(Item::Trait(item)) => item,
        Ok(_) => {
            let msg = "`#[switchboard::service]` goes on a trait: `pub trait Arith { async fn ...; }`";
            return Error::new(Span::call_site(), msg).to_compile_error().into();
        }
        Err(e) => return e.to_compile_error().into(),
    };
    match expand(attr.into(), item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Method {
    ident: syn::Ident,
    wire_name: String,
    /// Where the wire name comes from: the `name = "..."` literal, or the
    /// method's name.
    name_span: Span,
    idempotent: bool,
    arg: Option<(syn::Pat, Type)>,
    ok_type: Type,
    docs: Vec<Attribute>,
}

/// Every error found, so that one build reports them all (each method's
/// first problem, and each problem of the trait itself).
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn check<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn expand(attr: TokenStream2, mut item: ItemTrait) -> syn::Result<TokenStream2> {
    let mut errors = Errors::default();
    let mut service_name = item.ident.unraw().to_string();
    let mut named = false;
    let args = Punctuated::<Meta, Token![,]>::parse_terminated
        .parse2(attr)
        .map_err(|e| Error::new(e.span(), "expected `name = \"...\"` (the service's name on the wire)"));
    for meta in errors.check(args).unwrap_or_default() {
        match meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => {
                if named {
                    errors.push(Error::new_spanned(&nv, "`name` given twice"));
                }
                named = true;
                if let Some(name) = errors.check(lit_str(&nv.value)) {
                    if name.value().is_empty() {
                        errors.push(Error::new_spanned(&name, "the service name cannot be empty"));
                    }
                    service_name = name.value();
                }
            }
            Meta::Path(path) if path.is_ident("name") => {
                errors.push(Error::new_spanned(path, "`name` needs a value: `name = \"...\"`"));
            }
            other => {
                let path = other.path();
                let msg = format!(
                    "unknown option `{}`: `#[switchboard::service]` takes only `name = \"...\"`",
                    quote!(#path).to_string().replace(' ', "")
                );
                errors.push(Error::new_spanned(path, msg));
            }
        }
    }
    if !item.generics.params.is_empty() {
        errors.push(Error::new_spanned(
            &item.generics,
            format!(
                "a service trait cannot be generic: `{0}Server` and `{0}Client` need concrete argument and result types",
                item.ident
            ),
        ));
    }

    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            errors.push(Error::new_spanned(
                trait_item,
                "a service trait holds only `async fn` methods, no associated types, constants or macros",
            ));
            continue;
        };
        methods.extend(errors.check(parse_method(f)));
        errors.check(rewrite_async(f));
    }
    for (i, m) in methods.iter().enumerate() {
        if let Some(first) = methods[..i].iter().find(|earlier| earlier.wire_name == m.wire_name) {
            let msg = format!(
                "`{}` and `{}` would both answer `{service_name}.{}`: give one of them another name with \
                 `#[switchboard(name = \"...\")]`",
                first.ident, m.ident, m.wire_name
            );
            errors.push(Error::new(m.name_span, msg));
        }
    }
    errors.finish()?;

    item.supertraits.push(syn::parse_quote!(::core::marker::Send));
    item.supertraits.push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));

    let vis = &item.vis;
    let trait_ident = &item.ident;
    let server = format_ident!("{}Server", trait_ident);
    let client = format_ident!("{}Client", trait_ident);

    let wire_names: Vec<&String> = methods.iter().map(|m| &m.wire_name).collect();
    let arms = methods.iter().map(|m| {
        let ident = &m.ident;
        let wire = &m.wire_name;
        let (decode, call_args) = match &m.arg {
            Some((_, ty)) => (quote! { let args: #ty = req.decode()?; }, quote! { args }),
            None => (quote! { let _: () = req.decode()?; }, quote! {}),
        };
        quote! {
            #wire => {
                let inner = ::std::sync::Arc::clone(&self.inner);
                ::core::option::Option::Some(::std::boxed::Box::pin(async move {
                    #decode
                    let reply = inner.#ident(#call_args).await.map_err(::core::convert::Into::<::switchboard::Status>::into)?;
                    ::switchboard::Response::encode(req.codec, &reply)
                }))
            }
        }
    });

    let client_methods = methods.iter().map(|m| {
        let ident = &m.ident;
        let full = format!("{service_name}.{}", m.wire_name);
        let ok = &m.ok_type;
        let docs = &m.docs;
        // The parameter keeps the trait's name (rustdoc shows it), unless
        // it has none (`_`).
        let (param, arg) = match &m.arg {
            Some((pat, ty)) => {
                let name = match pat {
                    syn::Pat::Ident(p) => p.ident.clone(),
                    _ => format_ident!("args"),
                };
                (quote! { #name: #ty }, quote! { &#name })
            }
            None => (quote! {}, quote! { &() }),
        };
        // Locals with the macro's own hygiene, so that a parameter named
        // `opts` or `marked` is not shadowed by them.
        let opts = Ident::new("opts", Span::mixed_site());
        let marked = Ident::new("marked", Span::mixed_site());
        let options = if m.idempotent {
            quote! {
                let #marked;
                let #opts = if self.options.idempotent { &self.options } else {
                    #marked = self.options.clone().idempotent(true);
                    &#marked
                };
            }
        } else {
            quote! { let #opts = &self.options; }
        };
        quote! {
            #(#docs)*
            pub async fn #ident(&self, #param) -> ::core::result::Result<#ok, ::switchboard::Error> {
                #options
                ::switchboard::__private::call_typed(&self.channel, #full, #arg, #opts).await
            }
        }
    });

    let server_doc = format!("Serves a [`{trait_ident}`] implementation as the `{service_name}` service.");
    let client_doc = format!("A typed client of the `{service_name}` service.");

    Ok(quote! {
        #item

        #[doc = #server_doc]
        #vis struct #server<T> {
            inner: ::std::sync::Arc<T>,
        }

        impl<T: #trait_ident> #server<T> {
            /// Serve `service`.
            #vis fn new(service: T) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Serve a service that is shared with other code.
            #vis fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                Self { inner: service }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<T: #trait_ident> ::switchboard::Service for #server<T> {
            fn name(&self) -> &str {
                #service_name
            }

            fn methods(&self) -> ::std::vec::Vec<::std::string::String> {
                ::std::vec![#(::std::string::String::from(#wire_names)),*]
            }

            fn call(
                &self,
                method: &str,
                req: ::switchboard::Request,
            ) -> ::core::option::Option<::switchboard::BoxFuture<'static, ::core::result::Result<::switchboard::Response, ::switchboard::Status>>> {
                match method {
                    #(#arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        #vis struct #client<C = ::switchboard::Client> {
            channel: C,
            options: ::switchboard::CallOptions,
        }

        impl<C: ::switchboard::Channel> #client<C> {
            /// The service name on the wire.
            #vis const SERVICE: &'static str = #service_name;

            /// A client calling over `channel`.
            #vis fn new(channel: C) -> Self {
                Self { channel, options: ::switchboard::CallOptions::default() }
            }

            /// This client with `options` applied to every call.
            #vis fn with_options(mut self, options: ::switchboard::CallOptions) -> Self {
                self.options = options;
                self
            }

            /// The channel calls go over.
            #vis fn channel(&self) -> &C {
                &self.channel
            }

            #(#client_methods)*
        }
    })
}

/// The string literal of `name = "..."`; for `name = Plus`, an error that
/// suggests `name = "Plus"`.
fn lit_str(expr: &syn::Expr) -> syn::Result<LitStr> {
    match expr {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Ok(s.clone()),
        syn::Expr::Path(p) if p.path.get_ident().is_some() => {
            let ident = p.path.get_ident().map(ToString::to_string).unwrap_or_default();
            Err(Error::new_spanned(expr, format!("expected a string literal: `name = \"{ident}\"`")))
        }
        other => Err(Error::new_spanned(other, "expected a string literal, like `name = \"Multiply\"`")),
    }
}

const METHOD_OPTIONS: &str = "`#[switchboard(idempotent)]` or `#[switchboard(name = \"...\")]`";

fn parse_method(f: &mut TraitItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        let msg = format!("service methods must be `async fn`: write `async fn {}`", sig.ident);
        return Err(Error::new(sig.fn_token.span, msg));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(Error::new_spanned(
            unsafety,
            "service methods cannot be `unsafe`: the server calls them from safe code",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &sig.generics,
            "service methods cannot be generic: the server decodes the argument into one concrete type",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) => check_receiver(r)?,
        Some(first @ FnArg::Typed(_)) => {
            return Err(Error::new_spanned(first, "service methods take `&self` first, then their argument"));
        }
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                "service methods take `&self` (and at most one argument)",
            ))
        }
    }
    let arg = match inputs.next() {
        None => None,
        Some(FnArg::Typed(t)) => Some(((*t.pat).clone(), (*t.ty).clone())),
        // syn refuses a receiver after the first parameter before we get
        // here ("unexpected second method receiver").
        Some(other) => return Err(Error::new_spanned(other, "`self` can only be the first parameter")),
    };
    if let Some((_, ty @ Type::ImplTrait(_))) = &arg {
        return Err(Error::new_spanned(
            ty,
            "a service method's argument needs a concrete type, not `impl Trait`: the server decodes it",
        ));
    }
    let extra: Vec<&FnArg> = inputs.collect();
    if !extra.is_empty() {
        return Err(Error::new_spanned(
            quote!(#(#extra),*),
            "service methods take at most one argument besides `&self`: wrap several in a struct or a tuple",
        ));
    }
    let ok_type = result_ok_type(sig)?;

    let mut wire_name = pascal_case(&sig.ident.unraw().to_string());
    let mut name_span = sig.ident.span();
    let mut named = false;
    let mut idempotent = false;
    let mut kept = Vec::new();
    for attr in f.attrs.drain(..) {
        if !attr.path().is_ident("switchboard") {
            kept.push(attr);
            continue;
        }
        if !matches!(attr.meta, Meta::List(_)) {
            return Err(Error::new_spanned(attr, format!("expected {METHOD_OPTIONS}")));
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                    return Err(meta.error("`idempotent` takes no value: `#[switchboard(idempotent)]`"));
                }
                idempotent = true;
                Ok(())
            } else if meta.path.is_ident("name") {
                if named {
                    return Err(meta.error("`name` given twice"));
                }
                named = true;
                let name = lit_str(&meta.value()?.parse()?)?;
                wire_name = name.value();
                name_span = name.span();
                Ok(())
            } else {
                let path = &meta.path;
                let option = quote!(#path).to_string().replace(' ', "");
                Err(meta.error(format!("unknown option `{option}`: expected {METHOD_OPTIONS}")))
            }
        })?;
    }
    f.attrs = kept;
    if wire_name.is_empty() {
        return Err(Error::new(name_span, "a method's wire name cannot be empty"));
    }
    if wire_name.contains('.') {
        let msg = "a method's wire name cannot contain `.`: callers name it `Service.Method`, split at the last `.`";
        return Err(Error::new(name_span, msg));
    }
    let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect();
    Ok(Method { ident: f.sig.ident.clone(), wire_name, name_span, idempotent, arg, ok_type, docs })
}

/// `&self`, and no other receiver.
fn check_receiver(r: &Receiver) -> syn::Result<()> {
    let msg = match (&r.reference, &r.mutability, &r.colon_token) {
        (Some(_), None, None) => return Ok(()),
        (None, _, None) => "service methods take `&self`, not `self`: one value serves every call",
        (Some(_), Some(_), None) => {
            "service methods take `&self`, not `&mut self`: calls run concurrently, so keep mutable state \
             behind a lock or an atomic"
        }
        (_, _, Some(_)) => "service methods take `&self`; a typed receiver such as `self: Arc<Self>` is not supported",
    };
    Err(Error::new_spanned(r, msg))
}

/// `T` of a `Result<T, E>` return type.
fn result_ok_type(sig: &Signature) -> syn::Result<Type> {
    const EXPECTED: &str = "service methods return `Result<T, E>` with `E: Into<switchboard::Status>`";
    let ReturnType::Type(_, ty) = &sig.output else {
        return Err(Error::new_spanned(sig, format!("{EXPECTED}; this one returns nothing")));
    };
    let not_result = || Error::new_spanned(ty, EXPECTED);
    let Type::Path(path) = &**ty else {
        return Err(not_result());
    };
    let Some(last) = path.path.segments.last() else {
        return Err(not_result());
    };
    if last.ident != "Result" {
        return Err(not_result());
    }
    let one_param = || {
        Error::new_spanned(
            ty,
            "write both parameters, `Result<T, E>`: the macro sees tokens, not types, so it cannot find the \
             error type behind a `Result<T>` alias",
        )
    };
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(one_param());
    };
    match args.args.first() {
        Some(GenericArgument::Type(t)) if args.args.len() == 2 => Ok(t.clone()),
        _ => Err(one_param()),
    }
}

/// `async fn f(..) -> R;` becomes `fn f(..) -> impl Future<Output = R> + Send;`.
fn rewrite_async(f: &mut TraitItemFn) -> syn::Result<()> {
    if let Some(body) = &f.default {
        return Err(Error::new_spanned(
            body,
            "service methods cannot have a default body: each implementation provides it",
        ));
    }
    let output = match &f.sig.output {
        ReturnType::Type(_, ty) => quote! { #ty },
        ReturnType::Default => quote! { () },
    };
    f.sig.asyncness = None;
    f.sig.output = syn::parse_quote! {
        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };
    Ok(())
}

/// `multiply` → `Multiply`, `get_user_by_id` → `GetUserById`.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect()
}
