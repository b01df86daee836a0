//! Host bindings of the WIT world `projection` (`wit/projector.wit`).

wasmtime::component::bindgen!({
    world: "projection",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});
