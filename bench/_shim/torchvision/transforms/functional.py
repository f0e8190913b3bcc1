"""crop(img, top, left, height, width) for PIL images."""


def crop(img, top, left, height, width):
    return img.crop((left, top, left + width, top + height))
