// exceljs's prebuilt bundle without polyfills (see excel.ts): the same API as the package's main entry.
declare module 'exceljs/dist/exceljs.bare.min.js' {
  const ExcelJS: typeof import('exceljs');
  export default ExcelJS;
}
