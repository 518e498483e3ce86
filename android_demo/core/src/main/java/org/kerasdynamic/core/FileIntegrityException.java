package org.kerasdynamic.core;

/** A file named by the manifest is missing, unsafe (a link, outside the folder), resized or changed. */
public final class FileIntegrityException extends ManifestException {
  private static final long serialVersionUID = 1L;

  public FileIntegrityException(String message) {
    super(message);
  }
}
