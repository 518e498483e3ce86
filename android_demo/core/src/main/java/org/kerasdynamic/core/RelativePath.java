package org.kerasdynamic.core;

/**
 * Refuses file paths that could name something outside an export folder, on the text alone (as
 * {@code check_relative_path} in keras_dynamic/runtime/files.py): absolute paths, drive letters,
 * backslashes, and {@code ..}, {@code .} or empty components. Control characters (NUL
 * included) and unpaired surrogates are refused too: no file of an export is named with them.
 */
final class RelativePath {
  private RelativePath() {}

  static void check(String path, String where) {
    if (path == null || path.isEmpty()) {
      throw new FileIntegrityException(where + ": a file path must be a non-empty string.");
    }
    if (path.startsWith("/") || path.indexOf('\\') >= 0 || path.indexOf(':') >= 0) {
      throw new FileIntegrityException(
          where + ": file path '" + path + "' must be relative to the export folder (no "
              + "absolute paths, drive letters or backslashes).");
    }
    for (String part : path.split("/", -1)) {
      if (part.isEmpty() || part.equals(".") || part.equals("..")) {
        throw new FileIntegrityException(
            where + ": file path '" + path + "' may not contain '..', '.' or empty components.");
      }
    }
    for (int i = 0; i < path.length(); i++) {
      char c = path.charAt(i);
      if (Character.isHighSurrogate(c)
          && i + 1 < path.length()
          && Character.isLowSurrogate(path.charAt(i + 1))) {
        i++;
      } else if (Character.isISOControl(c) || Character.isSurrogate(c)) {
        throw new FileIntegrityException(
            where + ": file path " + Fields.show(path)
                + " contains a control character or an unpaired surrogate.");
      }
    }
  }
}
