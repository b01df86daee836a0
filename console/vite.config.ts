import { defineConfig } from "vite";

// The host embeds the build (host/build.rs passes --outDir); asset names carry
// their content hash, so the host may let browsers cache them.
export default defineConfig({
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
});
