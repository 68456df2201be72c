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
//! A method takes `&self` and at most one argument, and returns
//! `Result<T, E>` with `E: Into<switchboard::Status>`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, Attribute, Error, FnArg, GenericArgument, ItemTrait, LitStr, Meta, PathArguments, ReturnType,
    Token, TraitItem, TraitItemFn, Type,
};

/// Generate a server dispatcher and a typed client for a trait. See the
/// crate docs.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = parse_macro_input!(item as ItemTrait);
    match expand(attr.into(), item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Method {
    ident: syn::Ident,
    wire_name: String,
    idempotent: bool,
    arg: Option<(syn::Pat, Type)>,
    ok_type: Type,
    docs: Vec<Attribute>,
}

fn expand(attr: TokenStream2, mut item: ItemTrait) -> syn::Result<TokenStream2> {
    let mut service_name = item.ident.to_string();
    let args = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for meta in args {
        match meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => service_name = lit_str(&nv.value)?.value(),
            other => return Err(Error::new(other.span(), "expected `name = \"...\"`")),
        }
    }
    if !item.generics.params.is_empty() {
        return Err(Error::new(item.generics.span(), "a service trait cannot be generic"));
    }

    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            return Err(Error::new(trait_item.span(), "a service trait holds only async methods"));
        };
        methods.push(parse_method(f)?);
        rewrite_async(f)?;
    }

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
        let (param, arg) = match &m.arg {
            Some((pat, ty)) => (quote! { #pat: #ty }, quote! { &#pat }),
            None => (quote! {}, quote! { &() }),
        };
        let options = if m.idempotent {
            quote! {
                let marked;
                let opts = if self.options.idempotent { &self.options } else {
                    marked = self.options.clone().idempotent(true);
                    &marked
                };
            }
        } else {
            quote! { let opts = &self.options; }
        };
        quote! {
            #(#docs)*
            pub async fn #ident(&self, #param) -> ::core::result::Result<#ok, ::switchboard::Error> {
                #options
                ::switchboard::__private::call_typed(&self.channel, #full, #arg, opts).await
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

fn lit_str(expr: &syn::Expr) -> syn::Result<LitStr> {
    match expr {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Ok(s.clone()),
        other => Err(Error::new(other.span(), "expected a string literal")),
    }
}

fn parse_method(f: &mut TraitItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(sig.fn_token.span, "service methods must be `async fn`"));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(sig.generics.span(), "service methods cannot be generic"));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => return Err(Error::new(sig.span(), "service methods take `&self` first")),
    }
    let arg = match inputs.next() {
        None => None,
        Some(FnArg::Typed(t)) => Some(((*t.pat).clone(), (*t.ty).clone())),
        Some(other) => return Err(Error::new(other.span(), "unexpected receiver")),
    };
    if let Some(extra) = inputs.next() {
        return Err(Error::new(extra.span(), "service methods take at most one argument (wrap several in a struct)"));
    }
    let ok_type = result_ok_type(&sig.output)?;

    let mut wire_name = pascal_case(&sig.ident.to_string());
    let mut idempotent = false;
    let mut kept = Vec::new();
    for attr in f.attrs.drain(..) {
        if !attr.path().is_ident("switchboard") {
            kept.push(attr);
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                idempotent = true;
                Ok(())
            } else if meta.path.is_ident("name") {
                wire_name = meta.value()?.parse::<LitStr>()?.value();
                Ok(())
            } else {
                Err(meta.error("expected `idempotent` or `name = \"...\"`"))
            }
        })?;
    }
    f.attrs = kept;
    let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect();
    Ok(Method { ident: f.sig.ident.clone(), wire_name, idempotent, arg, ok_type, docs })
}

/// `T` of a `Result<T, E>` return type.
fn result_ok_type(output: &ReturnType) -> syn::Result<Type> {
    let err =
        |span: Span| Error::new(span, "service methods return `Result<T, E>` with `E: Into<switchboard::Status>`");
    let ReturnType::Type(_, ty) = output else {
        return Err(err(output.span()));
    };
    let Type::Path(path) = &**ty else {
        return Err(err(ty.span()));
    };
    let Some(last) = path.path.segments.last() else {
        return Err(err(ty.span()));
    };
    if last.ident != "Result" {
        return Err(err(ty.span()));
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(err(ty.span()));
    };
    match args.args.first() {
        Some(GenericArgument::Type(t)) if args.args.len() == 2 => Ok(t.clone()),
        _ => Err(err(ty.span())),
    }
}

/// `async fn f(..) -> R;` becomes `fn f(..) -> impl Future<Output = R> + Send;`.
fn rewrite_async(f: &mut TraitItemFn) -> syn::Result<()> {
    if f.default.is_some() {
        return Err(Error::new(f.span(), "service methods cannot have default bodies"));
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
