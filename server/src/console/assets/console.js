// The console's only script: checks a key number as it is typed (GB 11643
// citizen ID, GB 32100 unified social credit code; other documents are left
// to the server) and says why it is not valid; and the print button of the access report. The server checks
// everything again: this is help for the person typing, not a rule.
"use strict";
(function () {
  const ID_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const ID_C = "10X98765432";
  const CC_A = "0123456789ABCDEFGHJKLMNPQRTUWXY";
  const ORG_W = [3, 7, 9, 10, 5, 8, 4, 2];

  function fold(s) {
    // Full-width digits and letters to ASCII, spaces trimmed, upper case.
    return s.replace(/[\uFF01-\uFF5E]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xFEE0)).trim().toUpperCase();
  }

  function validDate(y, m, d) {
    const t = new Date(Date.UTC(y, m - 1, d));
    return t.getUTCFullYear() === y && t.getUTCMonth() === m - 1 && t.getUTCDate() === d;
  }

  function person(s) {
    if (s.length === 15) {
      if (!/^\d{15}$/.test(s)) return "含有不允许的字符";
      s = s.slice(0, 6) + "19" + s.slice(6);
      let sum = 0;
      for (let i = 0; i < 17; i++) sum += Number(s[i]) * ID_W[i];
      s += ID_C[sum % 11];
    }
    if (s.length !== 18) return "位数不对：公民身份号码为 18 位（旧式 15 位），现有 " + s.length + " 位";
    if (!/^\d{17}[\dX]$/.test(s)) return "含有不允许的字符";
    if (!validDate(Number(s.slice(6, 10)), Number(s.slice(10, 12)), Number(s.slice(12, 14)))) return "出生日期不存在";
    let sum = 0;
    for (let i = 0; i < 17; i++) sum += Number(s[i]) * ID_W[i];
    if (ID_C[sum % 11] !== s[17]) return "校验位不符";
    return null;
  }

  function entity(s) {
    if (s.length !== 18) return "位数不对：统一社会信用代码为 18 位，现有 " + s.length + " 位";
    for (const c of s) if (CC_A.indexOf(c) < 0) return "含有不允许的字符";
    // The embedded organization code (GB 11714) has its own check character.
    let o = 0;
    for (let i = 0; i < 8; i++) {
      const c = s[8 + i];
      o += (c >= "0" && c <= "9" ? Number(c) : c.charCodeAt(0) - 55) * ORG_W[i];
    }
    const oc = 11 - (o % 11);
    const ocs = oc === 10 ? "X" : oc === 11 ? "0" : String(oc);
    if (s[16] !== ocs) return "校验位不符";
    let sum = 0, w = 1;
    for (let i = 0; i < 17; i++) { sum += CC_A.indexOf(s[i]) * w; w = (w * 3) % 31; }
    if (CC_A[(31 - (sum % 31)) % 31] !== s[17]) return "校验位不符";
    return null;
  }

  function check(input) {
    const form = input.form;
    const hint = document.getElementById(input.getAttribute("aria-describedby") || "");
    const s = fold(input.value);
    let kind = input.dataset.keycheck;
    if (form && kind !== "any") {
      const r = form.querySelector("input[name=subject]:checked");
      kind = r ? r.value : "person";
    }
    // Other documents (passports, permits, licences) are checked by the
    // server alone: say so instead of judging them as ID numbers.
    const doc = form && form.querySelector("select[name=id_type]");
    if (doc && doc.value) {
      input.setAttribute("aria-invalid", "false");
      if (hint) {
        hint.textContent = s ? "提交后由系统核对此证件号码" : "";
        hint.className = "hint";
      }
      return;
    }
    let why;
    if (!s) why = null;
    else if (kind === "entity") why = entity(s);
    else if (kind === "any") why = person(s) && entity(s) ? person(s) : null;
    else why = person(s);
    input.setAttribute("aria-invalid", why ? "true" : "false");
    if (hint) {
      hint.textContent = !s ? "" : why ? "号码无效：" + why : "号码有效";
      hint.className = "hint " + (!s ? "" : why ? "bad" : "good");
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const input of document.querySelectorAll("input[data-keycheck]")) {
      input.addEventListener("input", () => check(input));
      if (input.form) {
        for (const r of input.form.querySelectorAll("input[name=subject], select[name=id_type]")) r.addEventListener("change", () => check(input));
      }
    }
    for (const b of document.querySelectorAll("[data-print]")) b.addEventListener("click", () => window.print());
  });
})();
