//! The `#[task]` attribute of [asyncer-guest](https://docs.rs/asyncer-guest).
//!
//! Use it through `asyncer_guest::task`; this crate is an implementation
//! detail. The expansion keeps the function as written (so it stays an
//! ordinary Rust function in native builds and tests) and, on wasm32 only,
//! adds the guest ABI v1 export `task:NAME`.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{parse_macro_input, FnArg, ItemFn, ReturnType, Type};

/// Turns `async fn name(input: In) -> Result<Out, E>` (or a plain `fn`, or one
/// returning `Out`) into the asyncer guest ABI v1 export `task:name`.
///
/// `In` must implement `serde::Deserialize`, `Out` `serde::Serialize` and `E`
/// `Display`; both `In` and `Out` `postcard_schema::Schema`, whose
/// description goes into the module's `asyncer.schema` section (so hosts can
/// speak JSON to the task), unless the attribute is `#[task(no_schema)]`.
/// A function without argument takes `()` as input.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let func = parse_macro_input!(item as ItemFn);
    match expand(attr, func) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// How the function returns its value.
enum Returns {
    /// `-> Result<Out, E>`: `E` becomes the guest's error message.
    Result(Type),
    /// `-> Out`: always a success.
    Value(Type),
    /// No return type: `()`.
    Unit,
}

struct Task {
    func: ItemFn,
    input: Option<Type>,
    returns: Returns,
    /// Record the input and output types in the module (not with
    /// `#[task(no_schema)]`).
    schema: bool,
}

fn parse(attr: TokenStream2, func: ItemFn) -> syn::Result<Task> {
    let schema = match attr.to_string().as_str() {
        "" => true,
        "no_schema" => false,
        _ => return Err(syn::Error::new_spanned(
            attr,
            "#[task] takes no arguments (but `no_schema`); the export is named after the function",
        )),
    };
    let sig = &func.sig;
    if let Some(token) = &sig.constness {
        return Err(syn::Error::new_spanned(
            token,
            "#[task] functions cannot be `const`",
        ));
    }
    if let Some(token) = &sig.unsafety {
        return Err(syn::Error::new_spanned(
            token,
            "#[task] functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new_spanned(
            abi,
            "#[task] functions cannot declare an ABI",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "#[task] functions cannot be generic: the input and output types must be concrete",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "#[task] functions cannot be variadic",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let input = match inputs.next() {
        None => None,
        Some(FnArg::Receiver(receiver)) => {
            return Err(syn::Error::new_spanned(
                receiver,
                "#[task] functions cannot take `self`: use a free function",
            ))
        }
        Some(FnArg::Typed(arg)) => Some((*arg.ty).clone()),
    };
    if let Some(extra) = inputs.next() {
        return Err(syn::Error::new_spanned(
            extra,
            "#[task] functions take at most one argument, the input; use a struct or tuple for more",
        ));
    }
    if let Some(Type::Reference(reference)) = &input {
        return Err(syn::Error::new_spanned(
            reference,
            "#[task] input must be an owned type, not a reference",
        ));
    }
    let returns = match &sig.output {
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => Returns::Result(ok),
            None => Returns::Value((**ty).clone()),
        },
        ReturnType::Default => Returns::Unit,
    };
    Ok(Task {
        func,
        input,
        returns,
        schema,
    })
}

/// A return type is a `Result` when its last path segment is `Result` with
/// two type arguments (`Result<T, E>`, `std::result::Result<T, E>`); returns
/// its `T`.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (2, Some(syn::GenericArgument::Type(ok))) => Some(ok.clone()),
        _ => None,
    }
}

fn expand(attr: TokenStream2, func: ItemFn) -> syn::Result<TokenStream2> {
    let task = parse(attr, func)?;
    let func = &task.func;
    let name = &func.sig.ident;
    let export_name = format!("task:{}", name.unraw());
    let shim = format_ident!("__asyncer_task_{}", name.unraw());
    let span = func.sig.span();

    let (input_ty, call) = match &task.input {
        Some(ty) => (quote!(#ty), quote!(#name(input))),
        None => (quote!(()), quote!({ let () = input; #name() })),
    };
    let awaited = if func.sig.asyncness.is_some() {
        quote!(#call.await)
    } else {
        call
    };
    let (result, output_ty) = match &task.returns {
        Returns::Result(ok) => (
            quote_spanned!(span=> ::asyncer_guest::__private::error_to_string(#awaited)),
            quote!(#ok),
        ),
        Returns::Value(ty) => (
            quote!(::core::result::Result::<_, ::std::string::String>::Ok(#awaited)),
            quote!(#ty),
        ),
        Returns::Unit => (
            quote!(::core::result::Result::<_, ::std::string::String>::Ok(#awaited)),
            quote!(()),
        ),
    };
    let vis = &func.vis;
    let binding = format_ident!("{}", name.unraw().to_string().to_uppercase());
    let task_name = name.unraw().to_string();
    let binding_doc = format!(
        "Typed reference to the [`{task_name}`] task, for `asyncer::Executor::submit_task`."
    );

    let check = format_ident!("__asyncer_check_{}", name.unraw());
    let schema_types = quote! {
        #task_name,
        <#input_ty as ::asyncer_guest::Schema>::SCHEMA,
        <#output_ty as ::asyncer_guest::Schema>::SCHEMA
    };
    // The types' description, one entry of the module's `asyncer.schema`
    // section, and its check in every build.
    let (schema_check, schema_entry) = if task.schema {
        (
            quote! { let _ = (#schema_types); },
            quote! {
                #[cfg(target_arch = "wasm32")]
                const _: () = {
                    const LEN: usize = ::asyncer_guest::__private::schema_entry_len(#schema_types);
                    #[allow(unsafe_code)] // `link_section` only names the custom section
                    #[link_section = "asyncer.schema"]
                    #[used]
                    static ENTRY: [u8; LEN] = ::asyncer_guest::__private::schema_entry::<LEN>(#schema_types);
                };
            },
        )
    } else {
        (quote!(), quote!())
    };
    Ok(quote! {
        #func

        #[doc = #binding_doc]
        #vis const #binding: ::asyncer_guest::TaskRef<#input_ty, #output_ty> =
            ::asyncer_guest::TaskRef::new(#task_name);

        // Type-checks the task against the ABI in every build (the export
        // below exists on wasm32 only): serde bounds, and `E: Display`.
        #[doc(hidden)]
        #[allow(dead_code, non_snake_case)]
        fn #check() {
            let _ = ::asyncer_guest::__private::envelope::<#input_ty, _, _>(
                &[],
                |input: #input_ty| async move { #result },
            );
            #schema_check
        }

        #schema_entry

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(unsafe_code)] // `export_name` only names the ABI export
        #[export_name = #export_name]
        pub extern "C" fn #shim(input_ptr: i32, input_len: i32) -> i64 {
            ::asyncer_guest::__private::run_task::<#input_ty, _, _>(
                input_ptr,
                input_len,
                |input: #input_ty| async move { #result },
            )
        }
    })
}
